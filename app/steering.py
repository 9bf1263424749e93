"""Steering a draft: pin or unpin a token, pin a span, lock a term, replace a span. Each works
while the draft streams (in effect from the next step), while it is paused, on an earlier step
(Resume then branches) and on a complete draft (Resume then refines it; app.runs glossary).

A click names the token the person saw: its position with the step and layout of the view it was
seen in. The server moves the position along the edits made since (RunControl.map_position) and
pins the token that view showed, even if a later step already changed it.

Audit events
  pin -> pin.add; unpin -> pin.remove; pin span -> pin.add; lock term -> pin.lock_term; edit -> edit
"""

from __future__ import annotations

import dataclasses
from typing import Any

from app import draft_view, runs
from app.auth import require_permission
from app.common import Refused, as_int, as_text, safe, storable
from app.draft_view import DraftUpdate, error_update
from app.runs import RunControl
from app.services import Services
from app.state import DraftState
from engine import sampler
from engine.sampler import Step
from engine.terms import find_term
from storage import repository as repo


def _editable(ctrl: RunControl) -> Step:
    """(lock held) The step an act changes; a complete draft opens for a refinement."""
    if ctrl.base is None:
        raise Refused("the draft has no step yet: wait for the first step")
    ctrl.open_complete()
    return ctrl.base


def _when(ctrl: RunControl) -> str:
    if ctrl.streaming:
        return "in effect from the next step"
    if ctrl.refining:
        return "Resume refines the draft around it, or Accept takes it as it is"
    return "in effect when you resume"


def _piece_text(svc: Services, ids: list[int]) -> str:
    """The pinned tokens as the pin's stored text (app.common.storable)."""
    text = storable(svc.tokenizer.decode(ids))
    return text if text.strip() else repr(text)


def _pin_step_index(ctrl: RunControl) -> int:
    assert ctrl.base is not None
    return ctrl.base.index if ctrl.base.index <= ctrl.total else ctrl.total


def _seen(ctrl: RunControl, position: int, step: Any, layout: Any) -> tuple[int, int | None]:
    """(lock held) (position now, token id the person saw or None) for a click on `position` of a
    view of `step` in `layout`; without step and layout the position is taken as it is now."""
    if layout is None or layout == "":
        return position, None
    lay = as_int(layout, "layout", -1, 2**31)
    now = ctrl.map_position(position, lay)
    k = as_int(step, "step", 0, ctrl.total) if step not in (None, "") else None
    frame = ctrl.frames.get(k) if k is not None else None
    if frame is not None and frame.layout == lay and 0 <= position < len(frame.token_ids):
        return now, int(frame.token_ids[position])
    return now, None


def span_text(svc: Services, state: DraftState | None, start: Any, end: Any, layout: Any = None) -> tuple[int, int, str]:
    """(start, end, text) of the selected tokens [start, end) as they are now: a selection made on
    an older view is moved along the edits made since; (0, 0, "") when there is no such span."""
    ctrl = svc.runs.get(state.run_id if state else None)
    if ctrl is None or not isinstance(start, int) or not isinstance(end, int):
        return 0, 0, ""
    with ctrl.lock:
        try:
            if layout not in (None, ""):
                lay = as_int(layout, "layout", -1, 2**31)
                start, end = ctrl.map_position(start, lay), ctrl.map_position(end - 1, lay) + 1
        except Refused:
            return 0, 0, ""
        if ctrl.base is not None and 0 <= start < end <= ctrl.base.length:
            return start, end, svc.tokenizer.decode(ctrl.base.tokens[start:end].tolist())
    return 0, 0, ""


@safe(error_update)
def toggle_pin(svc: Services, username: str | None, state: DraftState | None, position: Any, step: Any = None,
               layout: Any = None) -> DraftUpdate:
    """Pin the token at `position`, or unpin it (with the rest of its pin) if it is pinned. With
    the step and layout of the view it was clicked in, the token that view showed is pinned."""
    actor = require_permission(svc, username, "pin", "pin tokens")
    ctrl = runs.control_for(svc, state)
    with ctrl.lock:
        seen_pos = as_int(position, "position", -(2**31), 2**31)
        base = _editable(ctrl)
        L = base.length
        pos, seen_tid = _seen(ctrl, seen_pos, step, layout) if 0 <= seen_pos else (seen_pos, None)
        if not 0 <= pos < L:
            raise Refused(f"position {pos} lies outside the draft (positions 0 to {L - 1})")
        kind = ctrl.kinds.get(pos, "")
        if kind == "template":
            raise Refused("this token is fixed text of the template: it is always pinned")
        if kind == "edit":
            raise Refused("this token belongs to an edited span: it stays as edited (select it and type a new "
                          "replacement to change it)")
        if kind in ("pin", "term"):
            pin_id = ctrl.pin_rows.get(pos)
            group = sorted(p for p, i in ctrl.pin_rows.items() if i == pin_id) if pin_id is not None else [pos]
            with runs.act(svc, ctrl) as s:
                if pin_id is not None:
                    repo.remove_pin(s, pin_id, actor=actor.name, run_id=ctrl.run_id,
                                    step_index=_pin_step_index(ctrl))
                for p in group:
                    ctrl.held.pop(p, None)
                    ctrl.kinds.pop(p, None)
                    ctrl.pin_rows.pop(p, None)
                ctrl.changed_constraints()
            up = draft_view.view(svc, ctrl)
            where = f"{group[0]}" if len(group) == 1 else f"{group[0]}–{group[-1]}"
            return dataclasses.replace(up, message=f"unpinned position {where}", kind="ok")
        tid = int(base.tokens[pos]) if seen_tid is None else seen_tid
        with runs.act(svc, ctrl) as s:
            pin = repo.add_pin(s, document_id=ctrl.document_id, actor=actor.name, run_id=ctrl.run_id,
                               step_index=_pin_step_index(ctrl), span_start=pos, span_end=pos + 1,
                               text=_piece_text(svc, [tid]))
            if int(base.tokens[pos]) != tid:  # the step on screen moved on: put back the token the person saw
                tokens = base.tokens.clone()
                tokens[pos] = tid
                changed = base.changed.clone()
                changed[pos] = True
                ctrl.base = dataclasses.replace(base, tokens=tokens, changed=changed)
            ctrl.held[pos] = tid
            ctrl.kinds[pos] = "pin"
            ctrl.pin_rows[pos] = pin.id
            ctrl.changed_constraints()
        up = draft_view.view(svc, ctrl)
        when = _when(ctrl)
    moved = f" (clicked at position {seen_pos})" if seen_pos != pos else ""
    return dataclasses.replace(up, message=f"pinned position {pos} ({_piece_text(svc, [tid])}){moved}; {when}",
                               kind="ok")


@safe(error_update)
def pin_span(svc: Services, username: str | None, state: DraftState | None, start: Any, end: Any) -> DraftUpdate:
    """Pin tokens [start, end) as one pin (refused if any of them is already held)."""
    actor = require_permission(svc, username, "pin", "pin tokens")
    ctrl = runs.control_for(svc, state)
    with ctrl.lock:
        base = _editable(ctrl)
        L = base.length
        a = as_int(start, "start", -(2**31), 2**31)
        b = as_int(end, "end", -(2**31), 2**31)
        if not 0 <= a < b <= L:
            raise Refused(f"the span [{a}, {b}) lies outside the draft or is empty (positions 0 to {L - 1})")
        taken = [p for p in range(a, b) if p in ctrl.held]
        if taken:
            raise Refused(f"the span [{a}, {b}) overlaps held positions {taken[:8]}: unpin them first")
        ids = [int(x) for x in base.tokens[a:b].tolist()]
        with runs.act(svc, ctrl) as s:
            pin = repo.add_pin(s, document_id=ctrl.document_id, actor=actor.name, run_id=ctrl.run_id,
                               step_index=_pin_step_index(ctrl), span_start=a, span_end=b, text=_piece_text(svc, ids))
            for p, tid in zip(range(a, b), ids):
                ctrl.held[p], ctrl.kinds[p], ctrl.pin_rows[p] = tid, "pin", pin.id
            ctrl.changed_constraints()
        up = draft_view.view(svc, ctrl)
        when = _when(ctrl)
    return dataclasses.replace(up, message=f"pinned positions {a}–{b - 1}; {when}", kind="ok")


@safe(error_update)
def lock_term(svc: Services, username: str | None, state: DraftState | None, term: Any,
              match_case: bool = False) -> DraftUpdate:
    """Pin every occurrence of a phrase in the draft as whole tokens (engine.terms): letters in
    either case unless match_case."""
    actor = require_permission(svc, username, "pin", "lock terms")
    ctrl = runs.control_for(svc, state)
    term = as_text(term, "the term", svc.limits.max_term_chars).strip()
    if not term:
        raise Refused("type the term to lock")
    with ctrl.lock:
        base = _editable(ctrl)
        found = find_term(svc.tokenizer.piece_bytes(base.tokens.tolist()), term, match_case=bool(match_case))
        spans = [(a, b) for a, b in found if not any(p in ctrl.held for p in range(a, b))]
        if not spans:
            how = "with this exact case" if match_case else "in any case"
            already = " (every occurrence is already held)" if found else ""
            raise Refused(f"the term {term!r} does not occur {how} as whole words in the draft at this step{already}")
        with runs.act(svc, ctrl) as s:
            pins = repo.add_term_pins(s, document_id=ctrl.document_id, actor=actor.name, run_id=ctrl.run_id,
                                      step_index=_pin_step_index(ctrl), term=term, spans=spans)
            for pin in pins:
                for p in range(pin.span_start, pin.span_end):
                    ctrl.held[p], ctrl.kinds[p], ctrl.pin_rows[p] = int(base.tokens[p]), "term", pin.id
            ctrl.changed_constraints()
        up = draft_view.view(svc, ctrl)
        when = _when(ctrl)
    n = sum(b - a for a, b in spans)
    return dataclasses.replace(up, message=f"locked {term!r}: {len(spans)} occurrence(s), {n} token(s) pinned; {when}",
                               kind="ok")


@safe(error_update)
def edit_span(svc: Services, username: str | None, state: DraftState | None, start: Any, end: Any, text: Any,
              reason: Any = "") -> DraftUpdate:
    """Replace tokens [start, end) by `text` (any length, empty deletes); the new span is held.
    The draft may not grow past the longest draft allowed (Limits.max_length)."""
    actor = require_permission(svc, username, "edit", "edit drafts")
    ctrl = runs.control_for(svc, state)
    text = as_text(text, "the replacement", svc.limits.max_edit_chars, strip=False)
    reason = as_text(reason, "the reason", 500).strip() or "correction"
    tok = svc.tokenizer
    with ctrl.lock:
        base = _editable(ctrl)
        a = as_int(start, "span start", -(2**31), 2**31)
        b = as_int(end, "span end", -(2**31), 2**31)
        if not 0 <= a <= b <= base.length:
            raise Refused(f"the span [{a}, {b}) lies outside the draft (positions 0 to {base.length}, end exclusive)")
        new_ids = tok.encode(text)
        new_len = base.length - (b - a) + len(new_ids)
        if new_len > svc.limits.max_length:
            raise Refused(f"the draft would be {new_len} tokens long; at most {svc.limits.max_length} are allowed "
                          "(replace a longer span or shorten the replacement)")
        # an edited span may be edited again: its own positions are released first
        released = {p for p in range(a, b) if ctrl.kinds.get(p) == "edit"}
        held = {p: v for p, v in ctrl.held.items() if p not in released}
        new_step, new_held = sampler.edit_step(base, held, a, b, new_ids)
        old_text = tok.decode(base.tokens[a:b].tolist())
        if old_text == text:
            raise Refused("the replacement is the same as the text there: nothing to change")
        with runs.act(svc, ctrl) as s:
            repo.record_run_edit(s, document_id=ctrl.document_id, actor=actor.name, run_id=ctrl.run_id,
                                 step_index=_pin_step_index(ctrl), span_start=a, span_end=b, old_text=old_text,
                                 new_text=text, reason=reason, new_n_tokens=len(new_ids))
            ctrl.replace_span(a, b, released, len(new_ids), new_step, new_held)
        up = draft_view.view(svc, ctrl)
        when = _when(ctrl)
    return dataclasses.replace(up, message=f"replaced [{a}, {b}) ({len(new_ids)} token(s)); {when}", kind="ok")

