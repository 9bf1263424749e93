"""Edits: replacing a span of a run's tokens (pins after it move) or of a document's text.

Part of storage.repository (see its docstring for the glossary); Session first, never commits.
"""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from storage import validate
from storage.audit import append_event
from storage.errors import ValidationError
from storage.models import Edit, Pin, Run, User, utcnow
from storage.repository.roles import ActorRef, _who, require
from storage.repository.documents import _lock_document, get_document
from storage.repository.runs import _run_settings
from storage.repository.pins import _length_at, _pins_in_effect, _run_for
from storage.repository.positions import length_change, moved_span


def _overlaps(pin: Pin, start: int, end: int) -> bool:
    """Whether an edit of [start, end) touches the pin (an insertion strictly inside it counts)."""
    return (start < pin.span_end and pin.span_start < end) or (start == end and pin.span_start < start < pin.span_end)


def _replace_pin(pin: Pin, run: Run, step_index: int, spans: list[tuple[int, int]], edit: Edit) -> list[Pin]:
    """New rows in `run` from `step_index` on that take the place of `pin` (none: it ends here)."""
    rows = [Pin(document_id=pin.document_id, run_id=run.id, step_index=step_index, span_start=s, span_end=e,
                text=pin.text, kind=pin.kind, reason=pin.reason, created_by_id=pin.created_by_id,
                supersedes_pin_id=pin.id, edit_id=edit.id) for s, e in spans]
    if pin.run_id == run.id and pin.removed_at is not None:  # seen from an earlier step: unpinned later
        for row in rows:
            row.removed_at, row.removed_by_id = pin.removed_at, pin.removed_by_id
            row.removed_reason, row.removed_step_index = pin.removed_reason, pin.removed_step_index
    return rows


def _check_texts(old_text: str, new_text: str) -> None:
    validate.text(old_text, "old text", max_chars=validate.MAX_EDIT_CHARS, allow_empty=True)
    validate.text(new_text, "new text", max_chars=validate.MAX_EDIT_CHARS, allow_empty=True)
    if old_text == new_text:
        raise ValidationError("the new text is the same as the old text: nothing to edit")


def _edit_row(session: Session, by: User, *, document_id: int, run_id: int | None, step_index: int | None, unit: str,
              span_start: int, span_end: int, old_text: str, new_text: str, n_new: int | None, reason: str) -> Edit:
    get_document(session, document_id)
    edit = Edit(document_id=document_id, run_id=run_id, step_index=step_index, unit=unit, span_start=span_start,
                span_end=span_end, old_text=old_text, new_text=new_text, new_n_tokens=n_new, reason=reason,
                created_by_id=by.id)
    session.add(edit)
    session.flush()  # for a char edit this also bumps the document's version
    return edit


def record_run_edit(session: Session, *, document_id: int, actor: ActorRef, run_id: int, step_index: int,
                    span_start: int, span_end: int, old_text: str, new_text: str, reason: str,
                    new_n_tokens: int | None = None) -> Edit:
    """Record a replacement of tokens [span_start, span_end) of a run's step by new_text.

    new_n_tokens is how many tokens new_text is (default: as many as the span; 0 for ""). As in
    engine.sampler.apply_edit, the span may not overlap a pin holding for the run (nor may an
    insertion fall strictly inside one; pins made by earlier edits are released instead, their parts
    outside the span kept), the pins after the span move by the change in length (the rule in
    storage.repository.positions; new rows, one "pin.move" event), and the new tokens become a pin
    of kind "edit".
    """
    by = require(session, actor, "edit")
    assert by is not None
    reason = validate.reason(reason, required=True)
    _check_texts(old_text, new_text)
    run, step = _run_for(session, document_id, run_id, step_index)
    validate.span(span_start, span_end, _length_at(session, run, step_index, step.n_tokens), "edit", allow_empty=True)
    if new_n_tokens is None:
        n_new = span_end - span_start if new_text else 0
    elif isinstance(new_n_tokens, bool) or not isinstance(new_n_tokens, int) or not 0 <= new_n_tokens <= 1_000_000:
        raise ValidationError("new_n_tokens must be a whole number of tokens, 0 or more")
    else:
        n_new = new_n_tokens
    held = _pins_in_effect(session, run, at_step=step_index)
    for pin in held:
        if pin.kind != "edit" and _overlaps(pin, span_start, span_end):
            raise ValidationError(f"the edit [{span_start}, {span_end}) overlaps pinned tokens "
                                  f"[{pin.span_start}, {pin.span_end}) ({pin.text!r}): unpin them first")
    settings = _run_settings(run, step_index)
    edit = _edit_row(session, by, document_id=document_id, run_id=run_id, step_index=step_index, unit="token",
                     span_start=span_start, span_end=span_end, old_text=old_text, new_text=new_text, n_new=n_new,
                     reason=reason)
    delta = length_change(span_start, span_end, n_new)
    moves: list[tuple[Pin, list[Pin]]] = []
    for pin in held:
        released = pin.kind == "edit" and _overlaps(pin, span_start, span_end)  # its outer parts stay
        if released or (pin.span_start >= span_end and delta != 0):
            spans = moved_span(pin.span_start, pin.span_end, span_start, span_end, n_new)
            moves.append((pin, _replace_pin(pin, run, step_index, spans, edit)))
    edit_pin = None
    if n_new > 0:
        edit_pin = Pin(document_id=document_id, run_id=run_id, step_index=step_index, span_start=span_start,
                       span_end=span_start + n_new, text=new_text, kind="edit", created_by_id=by.id, edit_id=edit.id)
        session.add(edit_pin)
    session.add_all([row for _, rows in moves for row in rows])
    session.flush()
    new = {"text": new_text, "edit_id": edit.id, "n_tokens": n_new,
           "pin_id": edit_pin.id if edit_pin is not None else None}
    append_event(session, *_who(by), "edit", "edit", edit.id, document_id=document_id,
                 old={"span": [span_start, span_end], "unit": "token", "text": old_text}, new=new,
                 reason=reason, settings=settings)
    if moves:
        append_event(session, *_who(by), "pin.move", "edit", edit.id, document_id=document_id,
                     old={"pins": [{"id": p.id, "span": [p.span_start, p.span_end]} for p, _ in moves]},
                     new={"pins": [{"id": r.id, "span": [r.span_start, r.span_end], "replaces": p.id}
                                   for p, rows in moves for r in rows],
                          "shift": delta},
                     settings=settings)
    return edit


def record_text_edit(session: Session, *, document_id: int, actor: ActorRef, span_start: int, span_end: int,
                     old_text: str, new_text: str, reason: str, expected_version: int | None) -> Edit:
    """Record a replacement of characters [span_start, span_end) of the document's text.

    old_text must be what is there and expected_version the version the actor saw; the document's
    text is changed (StaleWrite if another version was saved meanwhile)."""
    by = require(session, actor, "edit")
    assert by is not None
    reason = validate.reason(reason, required=True)
    _check_texts(old_text, new_text)
    if expected_version is None:
        raise ValidationError("an edit of the document's text needs the version you edited (expected_version)")
    doc = _lock_document(session, document_id, expected_version)
    validate.span(span_start, span_end, len(doc.text), "edit", allow_empty=True)
    there = doc.text[span_start:span_end]
    if there != old_text:
        raise ValidationError(f"the text at [{span_start}, {span_end}) is {there!r}, not {old_text!r}")
    text = doc.text[:span_start] + new_text + doc.text[span_end:]
    validate.text(text, "document text", max_chars=validate.MAX_DOCUMENT_CHARS, allow_empty=True)
    doc.text, doc.updated_by_id, doc.updated_at = text, by.id, utcnow()
    edit = _edit_row(session, by, document_id=document_id, run_id=None, step_index=None, unit="char",
                     span_start=span_start, span_end=span_end, old_text=old_text, new_text=new_text, n_new=None,
                     reason=reason)
    new = {"text": new_text, "edit_id": edit.id, "version": get_document(session, document_id).version}
    append_event(session, *_who(by), "edit", "edit", edit.id, document_id=document_id,
                 old={"span": [span_start, span_end], "unit": "char", "text": old_text, "version": expected_version},
                 new=new, reason=reason)
    return edit


def list_edits(session: Session, *, document_id: int | None = None, run_id: int | None = None) -> list[Edit]:
    stmt = select(Edit).order_by(Edit.id)
    if document_id is not None:
        stmt = stmt.where(Edit.document_id == document_id)
    if run_id is not None:
        stmt = stmt.where(Edit.run_id == run_id)
    return list(session.scalars(stmt))
