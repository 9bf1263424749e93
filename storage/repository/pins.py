"""Pins: which hold for a run at a step (through its branches), adding and removing them.

Part of storage.repository (see its docstring for the glossary); Session first, never commits.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from storage import validate
from storage.audit import append_event
from storage.errors import NotFound, ValidationError
from storage.models import Edit, Pin, Run, Step, utcnow
from storage.repository.roles import ActorRef, _who, require
from storage.repository.documents import get_document
from storage.repository.runs import StepData, _run_settings, get_run, get_step
from storage.repository.positions import length_change


#
# Which pins hold for a run (the rule, also in docs/STORAGE.md):
#   * its own pins, unless unpinned;
#   * for a branch of run A made from step k at time T (the branch's started_at): the pins that
#     were in effect for A at step k at time T, recursively up the lineage. That is each pin of A
#     (own or inherited) with step_index <= k, created at or before T, and not unpinned at a step
#     <= k at or before T. So a pin A makes later (even at an earlier step) does not reach the
#     branch, and a pin A removes later (or removed at a step after k) still holds in the branch.
#     Removals made before migration 0002 have no step and count as made at every step.
#   * a pin row's span never changes. An edit that changes the length moves the pins after it by
#     writing new rows (supersedes_pin_id = the row they replace, step_index = the edit's step, in
#     the edited run); a row hides the row it supersedes for every run that sees the new row. So
#     the parent keeps its positions when a branch moves an inherited pin, and a branch made
#     before the edit keeps the old positions. Unpinning a pin inherited from a parent likewise
#     writes a removed row in the branch that supersedes it (the parent's pin is untouched).


REFINED_FROM = "refined_from_step"  # sampler-settings key of a run that refines its parent's complete draft


def _pin_views(session: Session, run: Run, at_step: int | None = None, *,
               refinements: bool = False) -> list[tuple[Run, int | None, datetime | None]]:
    """[(run, last step seen from it or None for all, time it was branched away from or None)], the run first.
    With refinements, a run that refines its parent's changed complete draft (its sampler settings
    carry refined_from_step, see REFINED_FROM) sees the parent up to that step at each of its own
    steps (those after parent_step_index): the pins made on the complete draft hold there, though
    the refinement's step indexes start again below it. Its inherited steps see the parent as a
    branch does."""
    out: list[tuple[Run, int | None, datetime | None]] = []
    limit, cutoff = at_step, None
    current = run
    while True:
        out.append((current, limit, cutoff))
        if current.parent_run_id is None or current.parent_step_index is None:
            return out
        refined = (current.sampler_settings or {}).get(REFINED_FROM) if refinements else None
        k = current.parent_step_index
        if isinstance(refined, int) and not isinstance(refined, bool) and refined > k and (limit is None or limit > k):
            limit = refined  # the refinement's own steps come after the complete draft it refines
        else:
            limit = current.parent_step_index if limit is None else min(limit, current.parent_step_index)
        cutoff = current.started_at if cutoff is None else min(cutoff, current.started_at)
        current = get_run(session, current.parent_run_id)


def _still_pinned(pin: Pin, limit: int | None, cutoff: datetime | None) -> bool:
    if pin.removed_at is None:
        return True
    if cutoff is not None and pin.removed_at > cutoff:
        return True  # unpinned after the branch was made
    return limit is not None and pin.removed_step_index is not None and pin.removed_step_index > limit


def _pins_in_effect(session: Session, run: Run, at_step: int | None = None) -> list[Pin]:
    """Every pin row (all kinds) holding for `run` now, or at its step `at_step`; by position."""
    rows: list[tuple[Pin, bool]] = []
    for r, limit, cutoff in _pin_views(session, run, at_step, refinements=True):
        stmt = select(Pin).where(Pin.run_id == r.id)
        if limit is not None:
            stmt = stmt.where(Pin.step_index <= limit)
        for pin in session.scalars(stmt):
            if cutoff is None or pin.created_at <= cutoff:
                rows.append((pin, _still_pinned(pin, limit, cutoff)))
    replaced = {p.supersedes_pin_id for p, _ in rows if p.supersedes_pin_id is not None}
    out = [p for p, alive in rows if alive and p.id not in replaced]
    return sorted(out, key=lambda p: (p.span_start, p.id))


def _latest_step_index(session: Session, run: Run) -> int | None:
    last = session.scalar(select(func.max(Step.step_index)).where(Step.run_id == run.id))
    return last if last is not None else run.parent_step_index


def _length_at(session: Session, run: Run, step_index: int, recorded: int) -> int:
    """The draft's length at a step of a run: the recorded step's, changed by the token edits made
    at that step (each by its length_change)."""
    length = recorded
    for r, _, cutoff in _pin_views(session, run, step_index):
        stmt = select(Edit).where(Edit.run_id == r.id, Edit.step_index == step_index, Edit.unit == "token",
                                  Edit.new_n_tokens.is_not(None))
        for e in session.scalars(stmt):
            if cutoff is None or e.created_at <= cutoff:
                length += length_change(e.span_start, e.span_end, e.new_n_tokens)  # type: ignore[arg-type]
    return length


def _run_for(session: Session, document_id: int, run_id: int, step_index: int | None) -> tuple[Run, StepData]:
    run = get_run(session, run_id)
    if run.document_id != document_id:
        raise ValidationError(f"run {run_id} belongs to document {run.document_id}, not {document_id}")
    if step_index is None:
        raise ValidationError("a step index is required with a run")
    return run, get_step(session, run_id, step_index)


def add_pin(session: Session, *, document_id: int, actor: ActorRef, run_id: int, step_index: int,
            span_start: int, span_end: int, text: str, reason: str | None = None) -> Pin:
    """Pin tokens [span_start, span_end) of the run's sequence at step_index."""
    return _add_pins(session, document_id, actor, run_id, step_index, [(span_start, span_end)], text, "token",
                     reason)[0]


def add_term_pins(session: Session, *, document_id: int, actor: ActorRef, run_id: int, step_index: int,
                  term: str, spans: Sequence[tuple[int, int]], reason: str | None = None) -> list[Pin]:
    """"Lock term": one pin per occurrence of `term` (the caller finds the spans), one audit event."""
    if not spans:
        raise ValidationError(f"the term {term!r} does not occur in the draft: nothing to pin")
    return _add_pins(session, document_id, actor, run_id, step_index, list(spans), term, "term", reason)


def _add_pins(session: Session, document_id: int, actor: ActorRef, run_id: int, step_index: int,
              spans: list[tuple[int, int]], text: str, kind: str, reason: str | None) -> list[Pin]:
    by = require(session, actor, "pin")
    assert by is not None
    reason = validate.reason(reason, required=False)
    validate.text(text, "pinned text", max_chars=validate.MAX_EDIT_CHARS)
    get_document(session, document_id)
    run, step = _run_for(session, document_id, run_id, step_index)
    length = _length_at(session, run, step_index, step.n_tokens)
    for start, end in spans:
        validate.span(start, end, length, "pin", allow_empty=False)
    pins = [Pin(document_id=document_id, run_id=run_id, step_index=step_index, span_start=s, span_end=e, text=text,
                kind=kind, reason=reason, created_by_id=by.id) for s, e in spans]
    session.add_all(pins)
    session.flush()
    action = "pin.add" if kind == "token" else "pin.lock_term"
    append_event(session, *_who(by), action, "pin", pins[0].id, document_id=document_id,
                 new={"pin_ids": [p.id for p in pins], "spans": [[s, e] for s, e in spans], "text": text,
                      "step_index": step_index},
                 reason=reason, settings=_run_settings(run, step_index))
    return pins


def _descends_from(session: Session, pin: Pin, ancestor_id: int) -> bool:
    seen: set[int] = set()
    current: Pin | None = pin
    while current is not None and current.supersedes_pin_id is not None and current.id not in seen:
        if current.supersedes_pin_id == ancestor_id:
            return True
        seen.add(current.id)
        current = session.get(Pin, current.supersedes_pin_id)
    return False


def remove_pin(session: Session, pin_id: int, *, actor: ActorRef, reason: str | None = None,
               run_id: int | None = None, step_index: int | None = None) -> Pin:
    """Unpin, in run `run_id` (default: the pin's own run) at its step `step_index` (default: the
    run's latest step). `pin_id` may be an earlier id of a pin an edit has moved since: the row
    holding now is unpinned. A pin of the run itself is marked removed (the row is kept); a pin the
    run inherited from a parent gets a removed row in this run that supersedes it, so the parent
    and its other branches keep it."""
    by = require(session, actor, "pin")
    assert by is not None
    reason = validate.reason(reason, required=False)
    pin = session.get(Pin, pin_id)
    if pin is None:
        raise NotFound(f"no pin {pin_id}")
    rid = run_id if run_id is not None else pin.run_id
    if rid is None:  # a pin without a run
        if pin.removed_at is not None:
            raise ValidationError(f"pin {pin_id} was already removed")
        targets, run, at = [pin], None, None
    else:
        run = get_run(session, rid)
        if run.document_id != pin.document_id:
            raise ValidationError(f"pin {pin_id} belongs to document {pin.document_id}, not to run {rid}'s")
        if step_index is not None:
            get_step(session, run.id, step_index)
        at = step_index if step_index is not None else _latest_step_index(session, run)
        holding = _pins_in_effect(session, run, step_index)
        targets = [p for p in holding if p.id == pin_id] or [p for p in holding if _descends_from(session, p, pin_id)]
        if not targets:
            if pin.removed_at is not None:
                raise ValidationError(f"pin {pin_id} was already removed")
            raise ValidationError(f"pin {pin_id} does not hold in run {rid}"
                                  + (f" at step {step_index}" if step_index is not None else ""))
        if any(p.removed_at is not None and p.run_id == run.id for p in targets):  # seen at an earlier step
            raise ValidationError(f"pin {pin_id} was already removed")
    now = utcnow()
    out: list[Pin] = []
    for target in targets:
        if run is None or target.run_id == run.id:
            row = target
        else:
            row = Pin(document_id=target.document_id, run_id=run.id, step_index=at, span_start=target.span_start,
                      span_end=target.span_end, text=target.text, kind=target.kind, reason=target.reason,
                      created_by_id=target.created_by_id, supersedes_pin_id=target.id, edit_id=target.edit_id)
            session.add(row)
        row.removed_at, row.removed_by_id, row.removed_reason, row.removed_step_index = now, by.id, reason, at
        out.append(row)
    session.flush()
    for target, row in zip(targets, out):
        new = None if row is target else {"run_id": row.run_id, "step_index": at, "pin_id": row.id}
        append_event(session, *_who(by), "pin.remove", "pin", target.id, document_id=target.document_id,
                     old={"span": [target.span_start, target.span_end], "text": target.text}, new=new, reason=reason)
    return out[0]


def active_pins(session: Session, *, run_id: int | None = None, document_id: int | None = None,
                include_edits: bool = False) -> list[Pin]:
    """The pins holding for one run (its own and those it inherits, see the rule above), or the pins
    not removed of a whole document (each run's current rows), by position. Pins made by edits
    (kind "edit": the tokens an edit put in, which the sampler holds) only with include_edits."""
    if run_id is not None:
        pins = _pins_in_effect(session, get_run(session, run_id))
        if document_id is not None:
            pins = [p for p in pins if p.document_id == document_id]
    else:
        stmt = select(Pin).where(Pin.removed_at.is_(None)).order_by(Pin.span_start, Pin.id)
        if document_id is not None:
            stmt = stmt.where(Pin.document_id == document_id)
        pins = list(session.scalars(stmt))
        later = select(Pin.run_id, Pin.supersedes_pin_id).where(Pin.supersedes_pin_id.is_not(None))
        if document_id is not None:
            later = later.where(Pin.document_id == document_id)
        moved = {(r, i) for r, i in session.execute(later)}  # replaced in their own run
        pins = [p for p in pins if (p.run_id, p.id) not in moved]
    return pins if include_edits else [p for p in pins if p.kind != "edit"]
