"""Plain functions the UI calls; testable without a browser.

Every handler takes the Services and the logged-in user's name first, checks the role on the
server (app.auth) before anything else, and returns a result carrying a message instead of
raising: refusals (wrong role, a pin outside the draft, an edit over a pin, a stale review, a
locked database) come back as the storage / engine message; anything unexpected is logged with
its traceback on the server and the page only gets a short message with a reference.

Glossary
  DraftUpdate   what the draft screen shows after a handler: message, the draft view payload
                (app.render), the step slider, the session state, the runs of the document
  stream        Generate and Resume are generators: one DraftUpdate per reverse-diffusion step,
                yielded as soon as the step is computed and recorded (storage.record_step)
  acts          generate -> run.start; pin -> pin.add; unpin -> pin.remove; edit -> edit;
                lock term -> pin.lock_term; branch -> run.start (with parent); pause -> run.paused;
                accept -> document.update (status awaiting_review) + run.finished;
                reject -> run.discarded (reason); discard -> document.update (status discarded);
                approve / reject in review -> review.approve / review.reject; export -> export;
                login / failed login -> login / login.failed (storage.repository.authenticate)
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import re
import secrets
import shutil
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, TypeVar

from app import render
from app.auth import AccessDenied, Actor, require_permission, require_screen
from app.runs import RunControl, frame_from_step, shift_positions, step_from_frame
from app.state import DraftState, ReviewState
from engine import sampler
from engine.sampler import ConstraintError
from engine.template import TemplateError, expand
from storage import repository as repo
from storage.db import transaction
from storage.errors import StorageError

log = logging.getLogger("app.handlers")
T = TypeVar("T")

USER_ERRORS: tuple[type[BaseException], ...] = (AccessDenied, StorageError, ConstraintError, TemplateError)
FORMATS = ("csv", "xlsx", "parquet", "json")
SIGNATURE_MEANINGS = {
    "approve": "I have reviewed this report and approve it as accurate and complete.",
    "reject": "I have reviewed this report and reject it for the reason given.",
}
FREE_LENGTH = "Free length"


class Refused(Exception):
    """Bad input from the page; the message says what is allowed."""


USER_ERRORS = USER_ERRORS + (Refused,)


def explain(exc: BaseException) -> str:
    """The message a person sees for an exception; unexpected ones are logged with a reference."""
    if isinstance(exc, USER_ERRORS):
        return str(exc)
    ref = secrets.token_hex(4)
    log.error("unexpected error (reference %s)", ref, exc_info=exc)
    return f"Something went wrong on the server (reference {ref}); nothing more was changed. Try again."


def safe(on_error: Callable[[str], T]) -> Callable[[Callable[..., T]], Callable[..., T]]:
    """Wrap a handler: exceptions become on_error(message)."""

    def wrap(fn: Callable[..., T]) -> Callable[..., T]:
        @functools.wraps(fn)
        def inner(*args: Any, **kwargs: Any) -> T:
            try:
                return fn(*args, **kwargs)
            except Exception as exc:  # noqa: BLE001 - the page gets a message, the log the traceback
                return on_error(explain(exc))

        return inner

    return wrap


# =================================================================== draft screen


@dataclass
class DraftUpdate:
    message: str = ""
    kind: str = "info"  # info / ok / error
    payload: dict[str, Any] | None = None  # None: leave the draft view as it is
    step: int | None = None
    total: int | None = None
    state: DraftState | None = None  # None: leave the session state as it is
    runs: list[tuple[str, int]] | None = None  # the document's runs (branches) for "reopen"
    streaming: bool | None = None
    text: str | None = None  # plain text of the draft on screen


def _error(message: str) -> DraftUpdate:
    return DraftUpdate(message=message, kind="error")


def _int(value: Any, what: str, lo: int, hi: int) -> int:
    try:
        f = float(value)
    except (TypeError, ValueError):
        raise Refused(f"{what} must be a whole number") from None
    if f != f or f != int(f):
        raise Refused(f"{what} must be a whole number, got {value!r}")
    n = int(f)
    if not lo <= n <= hi:
        raise Refused(f"{what} must be between {lo} and {hi}, got {n}")
    return n


def _float(value: Any, what: str, lo: float, hi: float) -> float:
    try:
        f = float(value)
    except (TypeError, ValueError):
        raise Refused(f"{what} must be a number") from None
    if not (lo <= f <= hi):
        raise Refused(f"{what} must be between {lo:g} and {hi:g}, got {value!r}")
    return f


def template_choices(svc: Any) -> list[str]:
    with svc.reader() as s:
        return [FREE_LENGTH] + [t.name for t in repo.list_templates(s)]


def _run_label(run: Any, current: int | None) -> str:
    parent = f" from run {run.parent_run_id} step {run.parent_step_index}" if run.parent_run_id else ""
    mark = " (on screen)" if run.id == current else ""
    return f"run {run.id}{parent} · {run.status}{mark}"


def _runs_of(svc: Any, document_id: int | None, current: int | None) -> list[tuple[str, int]]:
    if document_id is None:
        return []
    with svc.reader() as s:
        return [(_run_label(r, current), r.id) for r in repo.list_runs(s, document_id)]


def _payload(svc: Any, ctrl: RunControl, frame: render.Frame, status: str = "") -> dict[str, Any]:
    tok = svc.tokenizer
    return render.draft_payload(tok.pieces(frame.token_ids), frame, special=tok.special_ids, status=status,
                                run_id=ctrl.run_id)


def _live_frame(ctrl: RunControl) -> render.Frame:
    """The state a pin / edit applies to: `base` with the current kinds."""
    assert ctrl.base is not None
    base = ctrl.base
    recorded = ctrl.frames.get(base.index)
    elapsed = recorded.elapsed_ms if recorded is not None else None
    return frame_from_step(base, ctrl.kinds_list(base.length), elapsed)


def _view(svc: Any, ctrl: RunControl, status: str = "") -> DraftUpdate:
    frame = _live_frame(ctrl)
    return DraftUpdate(payload=_payload(svc, ctrl, frame, status), step=frame.index, total=ctrl.total,
                       text=svc.tokenizer.decode(frame.token_ids), streaming=ctrl.streaming)


def _control(svc: Any, state: DraftState | None) -> RunControl:
    if state is None or state.run_id is None:
        raise Refused("no draft on screen: generate one first")
    ctrl = svc.runs.get(state.run_id)
    if ctrl is None:
        ctrl = load_control(svc, state.run_id)
        svc.runs.put(ctrl)
    return ctrl


def _sampler_cfg(svc: Any, settings: dict[str, Any]) -> Any:
    # a run keeps the settings it was started with; fields it did not record are the model's
    return dataclasses.replace(svc.ckpt.sampler_cfg, **{f.name: settings[f.name] for f in dataclasses.fields(svc.ckpt.sampler_cfg)
                                                         if f.name in settings})


def _template_layout(svc: Any, session: Any, template_id: int | None) -> Any:
    if template_id is None:
        return None
    return expand(repo.get_template(session, template_id).body, svc.tokenizer)


def load_control(svc: Any, run_id: int) -> RunControl:
    """Rebuild a run's control from the database (after a restart, or to reopen an old branch).
    Held positions: the template's fixed text and the run's active pins; kinds of edits are not
    restored (their tokens are in the steps, unpinned)."""
    with svc.reader() as s:
        run = repo.get_run(s, run_id)
        doc = repo.get_document(s, run.document_id)
        steps = repo.list_steps(s, run_id)
        pins = repo.active_pins(s, run_id=run_id)
        layout = _template_layout(svc, s, doc.template_id)
        settings = dict(run.sampler_settings)
        status = run.status
    if not steps:
        raise Refused(f"run {run_id} has no recorded steps to show")
    total = int(settings["steps"])
    last = steps[-1]
    L = last.n_tokens
    kinds: dict[int, str] = {}
    pin_rows: dict[int, int] = {}
    if layout is not None and layout.length == L:
        kinds.update({p: "template" for p in layout.pins})
    for pin in pins:
        for p in range(pin.span_start, min(pin.span_end, L)):
            kinds[p] = "pin" if pin.kind == "token" else "term"
            pin_rows[p] = pin.id
    held = {p: last.token_ids[p] for p in kinds}
    ctrl = RunControl(run_id=run_id, document_id=doc.id, template_id=doc.template_id, user="", settings=settings,
                      held=held, kinds=kinds, pin_rows=pin_rows)
    prev: list[int] | None = None
    for sd in steps:
        changed = [False] * sd.n_tokens if prev is None or len(prev) != sd.n_tokens else \
            [a != b for a, b in zip(prev, sd.token_ids)]
        fk = ctrl.kinds_list(sd.n_tokens) if sd.n_tokens == L else [""] * sd.n_tokens
        ctrl.frames[sd.step_index] = render.Frame(sd.step_index, total, sd.token_ids, sd.confidences, changed, fk)
        prev = sd.token_ids
    ctrl.base = step_from_frame(ctrl.frames[last.step_index], held)
    ctrl.view_step = last.step_index
    ctrl.done = last.step_index == total or status in ("finished", "discarded")
    return ctrl


def generate(svc: Any, username: str | None, state: DraftState | None, *, template: str | None, length: Any,
             steps: Any, seed: Any, temperature: Any, title: str = "") -> Iterator[DraftUpdate]:
    """Start a new document and run it, yielding every step as it is computed."""
    try:
        actor = require_permission(svc, username, "run.create", "start drafts")
        require_screen(svc, username, "draft")
        lim = svc.limits
        n_steps = _int(steps, "steps", 1, lim.max_steps)
        seed_v = _int(seed, "seed", 0, lim.max_seed)
        temp_v = _float(temperature, "temperature", 0.05, 5.0)
        title = (title or "").strip()
        template = None if template in (None, "", FREE_LENGTH) else template
        with svc.reader() as s:
            tpl = repo.get_template_by_name(s, template) if template else None
            tpl_id, tpl_body = (tpl.id, tpl.body) if tpl else (None, None)
        kinds: dict[int, str] = {}
        held: dict[int, int] = {}
        if tpl_body is not None:
            layout = expand(tpl_body, svc.tokenizer)
            n_tokens = layout.length
            held = dict(layout.pins)
            kinds = {p: "template" for p in held}
        else:
            n_tokens = _int(length, "length", 1, lim.max_length)
        settings = {**dataclasses.asdict(svc.ckpt.sampler_cfg), "steps": n_steps, "seed": seed_v, "temperature": temp_v,
                    "length": n_tokens, "template": template}
        stamp = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
        title = title or f"{template or 'Free draft'} · {stamp}"
        with transaction(svc.factory) as s:
            doc = repo.create_document(s, actor=actor.name, title=title[:200], template_id=tpl_id)
            run = repo.create_run(s, document_id=doc.id, actor=actor.name, model_id=svc.model_id,
                                  model_checksum=svc.ckpt.checksum, seed=seed_v, sampler_settings=settings)
            doc_id, run_id = doc.id, run.id
        ctrl = RunControl(run_id=run_id, document_id=doc_id, template_id=tpl_id, user=actor.name,
                          settings=settings, held=held, kinds=kinds)
        svc.runs.put(ctrl)
    except Exception as exc:  # noqa: BLE001
        yield _error(explain(exc))
        return
    new_state = DraftState(document_id=doc_id, run_id=run_id)
    yield from _stream(svc, actor, ctrl, new_state, first_note=f"document {doc_id}, run {run_id}")


def resume(svc: Any, username: str | None, state: DraftState | None) -> Iterator[DraftUpdate]:
    """Continue the run on screen from its step; from an earlier step it continues as a new branch."""
    try:
        actor = require_permission(svc, username, "run.step", "continue drafts")
        ctrl = _control(svc, state)
        with ctrl.lock:
            if ctrl.streaming:
                raise Refused("this draft is already being generated")
            base = ctrl.base
            assert base is not None
            if base.index >= ctrl.total and ctrl.branch_from is None:
                raise Refused("the draft is complete: move the step slider back to continue from an earlier step "
                              "as a new branch, or accept it")
            if ctrl.branch_from is not None:
                ctrl = _branch(svc, actor, ctrl)
            else:
                with transaction(svc.factory) as s:
                    run = repo.get_run(s, ctrl.run_id)
                    if run.status == "paused":
                        repo.set_run_status(s, ctrl.run_id, actor=actor.name, status="running", reason="resumed")
                    elif run.status in ("finished", "discarded"):
                        raise Refused(f"run {ctrl.run_id} is {run.status}: move the step slider back to branch")
        assert state is not None
        new_state = DraftState(document_id=ctrl.document_id, run_id=ctrl.run_id)
    except Exception as exc:  # noqa: BLE001
        yield _error(explain(exc))
        return
    yield from _stream(svc, actor, ctrl, new_state, first_note="resumed")


def _branch(svc: Any, actor: Actor, old: RunControl) -> RunControl:
    """(old.lock held) A new run continuing from old.branch_from with old's current held positions;
    old gets back the state of its last step."""
    k = old.branch_from
    assert k is not None and old.base is not None
    with transaction(svc.factory) as s:
        run = repo.create_run(s, document_id=old.document_id, actor=actor.name, model_id=svc.model_id,
                              model_checksum=svc.ckpt.checksum, seed=int(old.settings["seed"]),
                              sampler_settings=old.settings, parent_run_id=old.run_id, parent_step_index=k)
        new_id = run.id
    new = RunControl(run_id=new_id, document_id=old.document_id, template_id=old.template_id, user=actor.name,
                     settings=dict(old.settings), held=dict(old.held), kinds=dict(old.kinds),
                     pin_rows=dict(old.pin_rows), frames={i: f for i, f in old.frames.items() if i <= k},
                     base=old.base, view_step=k)
    _restore_live(old)
    svc.runs.put(new)
    return new


def _restore_live(ctrl: RunControl) -> None:
    if ctrl.live is not None:
        ctrl.held, ctrl.kinds, ctrl.pin_rows, ctrl.base = ctrl.live
        ctrl.live = None
    ctrl.branch_from = None
    ctrl.view_step = ctrl.last_index
    ctrl.changed_constraints()


def _iterator(svc: Any, ctrl: RunControl) -> Iterator[Any]:
    run = dict(pins=dict(ctrl.held), words=svc.ckpt.words,
               labels=[tid for p, tid in sorted(ctrl.held.items()) if ctrl.kinds.get(p) == "template"])
    if ctrl.base is None:
        run["length"] = int(ctrl.settings["length"])
    else:
        run["start"] = sampler.resume_from(ctrl.base, ctrl.base.tokens, ctrl.held)
    return sampler.sample(svc.ckpt.model, svc.diffusion, _sampler_cfg(svc, ctrl.settings), **run)


def _stream(svc: Any, actor: Actor, ctrl: RunControl, state: DraftState, first_note: str = "") -> Iterator[DraftUpdate]:
    # never yield while holding ctrl.lock: Gradio may resume the generator on another worker
    # thread (an RLock released there raises), and every pin / edit handler would wait meanwhile
    with ctrl.lock:
        busy = ctrl.streaming
        if not busy:
            ctrl.streaming, ctrl.pause_requested, ctrl.done = True, False, False
    if busy:
        yield _error("this draft is already being generated")
        return
    runs = _runs_of(svc, ctrl.document_id, ctrl.run_id)
    note = first_note
    try:
        it: Iterator[Any] | None = None
        seen = -1
        while True:
            paused: DraftUpdate | None = None
            with ctrl.lock:
                if ctrl.pause_requested:
                    ctrl.pause_requested = False
                    with transaction(svc.factory) as s:
                        repo.set_run_status(s, ctrl.run_id, actor=actor.name, status="paused")
                    ctrl.streaming = False
                    up = _view(svc, ctrl, "paused")
                    paused = dataclasses.replace(up, message=f"Paused at step {up.step}. Click tokens to pin them, "
                                                 "edit a span or lock a term, then resume.", state=state,
                                                 runs=_runs_of(svc, ctrl.document_id, ctrl.run_id), streaming=False)
                elif it is None or seen != ctrl.generation:
                    it = _iterator(svc, ctrl)
                    seen = ctrl.generation
            if paused is not None:
                yield paused
                return
            t0 = time.perf_counter()
            step = next(it, None)
            if step is None:
                break
            compute_ms = (time.perf_counter() - t0) * 1000.0
            with ctrl.lock:
                if seen != ctrl.generation:
                    continue  # pins or tokens changed while this step was computed: compute it again with them
                with transaction(svc.factory) as s:
                    repo.record_step(s, ctrl.run_id, step.index, step.tokens.tolist(), step.confidence.tolist(), t=step.t)
                frame = frame_from_step(step, ctrl.kinds_list(step.length), compute_ms)
                ctrl.frames[step.index] = frame
                ctrl.base = step
                ctrl.view_step = step.index
                done = step.done
                if done:
                    ctrl.done = True
                    with transaction(svc.factory) as s:
                        repo.set_run_status(s, ctrl.run_id, actor=actor.name, status="paused",
                                            reason="draft complete: awaiting accept, reject or discard")
                    ctrl.streaming = False
                payload = _payload(svc, ctrl, frame, "complete" if done else "generating")
            text = svc.tokenizer.decode(frame.token_ids)
            msg = ("Draft complete: accept it, reject it with a reason, or go back to an earlier step."
                   if done else (note or "generating"))
            yield DraftUpdate(message=msg, kind="ok" if done else "info", payload=payload, step=step.index,
                              total=ctrl.total, state=state, runs=_runs_of(svc, ctrl.document_id, ctrl.run_id)
                              if done else runs, streaming=not done, text=text)
            note = ""
            if done:
                return
            if svc.step_delay_s:
                time.sleep(svc.step_delay_s)
    except Exception as exc:  # noqa: BLE001
        yield DraftUpdate(message=explain(exc), kind="error", state=state, streaming=False)
    finally:
        with ctrl.lock:
            ctrl.streaming = False
            ctrl.pause_requested = False


@safe(_error)
def pause(svc: Any, username: str | None, state: DraftState | None) -> DraftUpdate:
    """Ask the streaming run to stop after the current step (it stays resumable)."""
    require_permission(svc, username, "run.status", "pause drafts")
    ctrl = _control(svc, state)
    with ctrl.lock:
        if not ctrl.streaming:
            return DraftUpdate(message="nothing is being generated: the draft is already paused", kind="info")
        ctrl.pause_requested = True
    # no message: the stream's own "Paused at step N" is the confirmation, and a "pausing…" sent
    # from here could reach the browser after it and overwrite it (seen in a loaded CI run)
    return DraftUpdate(kind="info")


def _editable(ctrl: RunControl) -> Any:
    base = ctrl.base
    if base is None:
        raise Refused("the draft has no step yet: wait for the first step")
    if base.index >= ctrl.total and ctrl.branch_from is None:
        raise Refused("the draft is complete: move the step slider back to change it and continue as a new branch")
    return base


def _piece_text(svc: Any, ids: list[int]) -> str:
    text = svc.tokenizer.decode(ids)
    return text if text.strip() else repr(text)


def _pin_step_index(ctrl: RunControl) -> int:
    assert ctrl.base is not None
    return ctrl.base.index


@safe(_error)
def toggle_pin(svc: Any, username: str | None, state: DraftState | None, position: Any) -> DraftUpdate:
    """Pin the token at `position`, or unpin it (with the rest of its pin) if it is pinned."""
    actor = require_permission(svc, username, "pin", "pin tokens")
    ctrl = _control(svc, state)
    with ctrl.lock:
        base = _editable(ctrl)
        L = base.length
        pos = _int(position, "position", -(2**31), 2**31)
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
            if pin_id is not None:
                with transaction(svc.factory) as s:
                    repo.remove_pin(s, pin_id, actor=actor.name, run_id=ctrl.run_id,
                                    step_index=_pin_step_index(ctrl))
            for p in group:
                ctrl.held.pop(p, None)
                ctrl.kinds.pop(p, None)
                ctrl.pin_rows.pop(p, None)
            ctrl.changed_constraints()
            up = _view(svc, ctrl)
            where = f"{group[0]}" if len(group) == 1 else f"{group[0]}–{group[-1]}"
            return dataclasses.replace(up, message=f"unpinned position {where}", kind="ok")
        tid = int(base.tokens[pos])
        with transaction(svc.factory) as s:
            pin = repo.add_pin(s, document_id=ctrl.document_id, actor=actor.name, run_id=ctrl.run_id,
                               step_index=_pin_step_index(ctrl), span_start=pos, span_end=pos + 1,
                               text=_piece_text(svc, [tid]))
            pin_id = pin.id
        ctrl.held[pos] = tid
        ctrl.kinds[pos] = "pin"
        ctrl.pin_rows[pos] = pin_id
        ctrl.changed_constraints()
        up = _view(svc, ctrl)
    when = "from the next step" if ctrl.streaming else "when you resume"
    return dataclasses.replace(up, message=f"pinned position {pos} ({_piece_text(svc, [tid])}); in effect {when}",
                               kind="ok")


@safe(_error)
def pin_span(svc: Any, username: str | None, state: DraftState | None, start: Any, end: Any) -> DraftUpdate:
    """Pin tokens [start, end) as one pin (refused if any of them is already held)."""
    actor = require_permission(svc, username, "pin", "pin tokens")
    ctrl = _control(svc, state)
    with ctrl.lock:
        base = _editable(ctrl)
        L = base.length
        a = _int(start, "start", -(2**31), 2**31)
        b = _int(end, "end", -(2**31), 2**31)
        if not 0 <= a < b <= L:
            raise Refused(f"the span [{a}, {b}) lies outside the draft or is empty (positions 0 to {L - 1})")
        taken = [p for p in range(a, b) if p in ctrl.held]
        if taken:
            raise Refused(f"the span [{a}, {b}) overlaps held positions {taken[:8]}: unpin them first")
        ids = [int(x) for x in base.tokens[a:b].tolist()]
        with transaction(svc.factory) as s:
            pin = repo.add_pin(s, document_id=ctrl.document_id, actor=actor.name, run_id=ctrl.run_id,
                               step_index=_pin_step_index(ctrl), span_start=a, span_end=b, text=_piece_text(svc, ids))
            pin_id = pin.id
        for p, tid in zip(range(a, b), ids):
            ctrl.held[p], ctrl.kinds[p], ctrl.pin_rows[p] = tid, "pin", pin_id
        ctrl.changed_constraints()
        up = _view(svc, ctrl)
    return dataclasses.replace(up, message=f"pinned positions {a}–{b - 1}", kind="ok")


@safe(_error)
def lock_term(svc: Any, username: str | None, state: DraftState | None, term: str) -> DraftUpdate:
    """Pin every occurrence of a phrase in the draft (as tokenised on its own and after a space)."""
    actor = require_permission(svc, username, "pin", "lock terms")
    ctrl = _control(svc, state)
    term = (term or "")
    if not term.strip():
        raise Refused("type the term to lock")
    if len(term) > svc.limits.max_term_chars:
        raise Refused(f"the term is {len(term)} characters long; at most {svc.limits.max_term_chars}")
    tok = svc.tokenizer
    with ctrl.lock:
        base = _editable(ctrl)
        held = dict(ctrl.held)
        spans: list[tuple[int, int]] = []
        for variant in dict.fromkeys([term, " " + term.lstrip()]):
            ids = tok.encode(variant)
            if not ids:
                continue
            new = sampler.lock_term(base.tokens, held, ids)
            added = sorted(set(new) - set(held))
            i = 0
            while i < len(added):
                j = i
                while j + 1 < len(added) and added[j + 1] == added[j] + 1:
                    j += 1
                spans.append((added[i], added[j] + 1))
                i = j + 1
            held = new
        if not spans:
            raise Refused(f"the term {term!r} does not occur in the draft at this step (or is already pinned)")
        with transaction(svc.factory) as s:
            pins = repo.add_term_pins(s, document_id=ctrl.document_id, actor=actor.name, run_id=ctrl.run_id,
                                      step_index=_pin_step_index(ctrl), term=term.strip(), spans=spans)
            ids_by_span = [(p.span_start, p.span_end, p.id) for p in pins]
        for a, b, pin_id in ids_by_span:
            for p in range(a, b):
                ctrl.held[p], ctrl.kinds[p], ctrl.pin_rows[p] = held[p], "term", pin_id
        ctrl.changed_constraints()
        up = _view(svc, ctrl)
    n = sum(b - a for a, b in spans)
    return dataclasses.replace(up, message=f"locked {term.strip()!r}: {len(spans)} occurrence(s), {n} token(s) pinned",
                               kind="ok")


@safe(_error)
def edit_span(svc: Any, username: str | None, state: DraftState | None, start: Any, end: Any, text: str,
              reason: str = "") -> DraftUpdate:
    """Replace tokens [start, end) by `text` (any length, empty deletes); the new span is held."""
    actor = require_permission(svc, username, "edit", "edit drafts")
    ctrl = _control(svc, state)
    text = text if isinstance(text, str) else ""
    if len(text) > svc.limits.max_edit_chars:
        raise Refused(f"the replacement is {len(text)} characters long; at most {svc.limits.max_edit_chars}")
    tok = svc.tokenizer
    with ctrl.lock:
        base = _editable(ctrl)
        a = _int(start, "span start", -(2**31), 2**31)
        b = _int(end, "span end", -(2**31), 2**31)
        if not 0 <= a <= b <= base.length:
            raise Refused(f"the span [{a}, {b}) lies outside the draft (positions 0 to {base.length}, end exclusive)")
        # an edited span may be edited again: its own positions are released first
        released = {p for p in range(a, b) if ctrl.kinds.get(p) == "edit"}
        held = {p: v for p, v in ctrl.held.items() if p not in released}
        new_ids = tok.encode(text)
        new_step, new_held = sampler.edit_step(base, held, a, b, new_ids)
        old_text = tok.decode(base.tokens[a:b].tolist())
        if old_text == text:
            raise Refused("the replacement is the same as the text there: nothing to change")
        with transaction(svc.factory) as s:
            repo.record_edit(s, document_id=ctrl.document_id, actor=actor.name, span_start=a, span_end=b,
                             old_text=old_text, new_text=text, reason=(reason or "").strip() or "correction",
                             run_id=ctrl.run_id, step_index=_pin_step_index(ctrl), new_n_tokens=len(new_ids))
        kinds = {p: k for p, k in ctrl.kinds.items() if p not in released}
        kinds = shift_positions(kinds, a, b, len(new_ids))
        kinds.update({a + i: "edit" for i in range(len(new_ids))})
        ctrl.kinds = kinds
        ctrl.pin_rows = shift_positions(ctrl.pin_rows, a, b, len(new_ids))
        ctrl.held = new_held
        ctrl.base = new_step
        ctrl.changed_constraints()
        up = _view(svc, ctrl)
    when = "from the next step" if ctrl.streaming else "when you resume"
    return dataclasses.replace(up, message=f"replaced [{a}, {b}) ({len(new_ids)} token(s)); in effect {when}", kind="ok")


@safe(_error)
def view_step(svc: Any, username: str | None, state: DraftState | None, index: Any) -> DraftUpdate:
    """Show recorded step `index`. While paused, pins and edits then apply to that step and
    Resume continues from it as a new branch (the run on screen is kept)."""
    require_screen(svc, username, "draft")
    ctrl = _control(svc, state)
    with ctrl.lock:
        if not ctrl.frames:
            raise Refused("no steps recorded yet")
        k = _int(index, "step", 0, ctrl.total)
        if k not in ctrl.frames:
            k = max(i for i in ctrl.frames if i <= k) if any(i <= k for i in ctrl.frames) else min(ctrl.frames)
        frame = ctrl.frames[k]
        if ctrl.streaming:
            return DraftUpdate(payload=_payload(svc, ctrl, frame, "generating: pause to continue from here"),
                               step=k, total=ctrl.total, message=f"showing step {k} (the run continues)")
        last = ctrl.last_index
        if k == last:
            if ctrl.branch_from is not None:
                _restore_live(ctrl)
            up = _view(svc, ctrl, "complete" if k >= ctrl.total else "paused")
            return dataclasses.replace(up, message=f"step {k}, the latest of run {ctrl.run_id}")
        if ctrl.branch_from is None:
            ctrl.live = (dict(ctrl.held), dict(ctrl.kinds), dict(ctrl.pin_rows), ctrl.base)
        ctrl.kinds = {i: kd for i, kd in enumerate(frame.kinds) if kd}
        ctrl.held = {i: frame.token_ids[i] for i in ctrl.kinds}
        ctrl.pin_rows = {p: i for p, i in ctrl.pin_rows.items() if p in ctrl.held}
        ctrl.base = step_from_frame(frame, ctrl.held)
        ctrl.branch_from = k
        ctrl.view_step = k
        ctrl.changed_constraints()
        up = _view(svc, ctrl, "earlier step")
    return dataclasses.replace(up, message=f"step {k}: change pins or edit, then Resume continues from here as a new "
                               "branch (this run is kept)")


@safe(_error)
def open_run(svc: Any, username: str | None, state: DraftState | None, run_id: Any) -> DraftUpdate:
    """Reopen a run (branch) of the document on screen."""
    require_screen(svc, username, "draft")
    rid = _int(run_id, "run", 1, 2**62)
    with svc.reader() as s:
        run = repo.get_run(s, rid)
        doc_id = run.document_id
    if state is not None and state.document_id is not None and state.document_id != doc_id:
        raise Refused(f"run {rid} belongs to another document")
    ctrl = _control(svc, DraftState(document_id=doc_id, run_id=rid))
    with ctrl.lock:
        up = _view(svc, ctrl, "reopened")
    new_state = DraftState(document_id=doc_id, run_id=rid)
    return dataclasses.replace(up, state=new_state, runs=_runs_of(svc, doc_id, rid), message=f"reopened run {rid}")


def _clean(text: str) -> str:
    """Model text as a document may hold it: a NUL (which no database text column takes) becomes U+FFFD."""
    return text.replace("\x00", "\ufffd")


def _finish_checks(svc: Any, ctrl: RunControl) -> None:
    if ctrl.streaming:
        raise Refused("pause the run first")


@safe(_error)
def accept(svc: Any, username: str | None, state: DraftState | None) -> DraftUpdate:
    """Accept the complete draft: its text becomes the document's, which awaits review."""
    actor = require_permission(svc, username, "document.update", "accept drafts")
    ctrl = _control(svc, state)
    with ctrl.lock:
        _finish_checks(svc, ctrl)
        base = ctrl.base
        if base is None or base.index < ctrl.total or ctrl.branch_from is not None:
            raise Refused("the draft is not complete: resume it to the last step first")
        text = _clean(svc.tokenizer.decode(base.tokens.tolist()))
        with transaction(svc.factory) as s:
            run = repo.get_run(s, ctrl.run_id)
            if run.status not in ("finished", "discarded"):
                repo.set_run_status(s, ctrl.run_id, actor=actor.name, status="finished", reason="accepted")
            doc = repo.get_document(s, ctrl.document_id)
            if doc.status != "draft":
                raise Refused(f"document {doc.id} is {doc.status.replace('_', ' ')}: it cannot be accepted again")
            repo.update_document(s, doc.id, actor=actor.name, expected_version=doc.version, text=text,
                                 status="awaiting_review", reason=f"accepted run {ctrl.run_id}")
        up = _view(svc, ctrl, "accepted")
    return dataclasses.replace(up, message=f"accepted: document {ctrl.document_id} now awaits review", kind="ok",
                               runs=_runs_of(svc, ctrl.document_id, ctrl.run_id))


@safe(_error)
def reject(svc: Any, username: str | None, state: DraftState | None, reason: str) -> DraftUpdate:
    """Reject the run's draft with a reason (recorded as QA feedback); the document stays a draft."""
    actor = require_permission(svc, username, "run.status", "reject drafts")
    if not (reason or "").strip():
        raise Refused("say why you reject the draft (the reason is recorded)")
    ctrl = _control(svc, state)
    with ctrl.lock:
        _finish_checks(svc, ctrl)
        with transaction(svc.factory) as s:
            repo.set_run_status(s, ctrl.run_id, actor=actor.name, status="discarded", reason=reason.strip())
        ctrl.done = True
    return DraftUpdate(message=f"run {ctrl.run_id} rejected; generate again or reopen another branch", kind="ok",
                       runs=_runs_of(svc, ctrl.document_id, ctrl.run_id))


@safe(_error)
def discard(svc: Any, username: str | None, state: DraftState | None) -> DraftUpdate:
    """Discard the whole document (its runs and history are kept in the trail)."""
    actor = require_permission(svc, username, "document.update", "discard drafts")
    ctrl = _control(svc, state)
    with ctrl.lock:
        _finish_checks(svc, ctrl)
        with transaction(svc.factory) as s:
            doc = repo.get_document(s, ctrl.document_id)
            repo.update_document(s, doc.id, actor=actor.name, expected_version=doc.version, status="discarded",
                                 reason="discarded in the draft screen")
        ctrl.done = True
    return DraftUpdate(message=f"document {ctrl.document_id} discarded", kind="ok", payload=render.EMPTY_PAYLOAD,
                       step=0, total=1, state=DraftState(), runs=[])


def _safe_filename(title: str) -> str:
    name = re.sub(r"[^A-Za-z0-9._-]+", "_", title).strip("._") or "draft"
    return name[:60]


def download(svc: Any, username: str | None, state: DraftState | None, fmt: str) -> tuple[str | None, str]:
    """Write the draft on screen (the accepted text once accepted) as Markdown or plain text;
    returns (file path or None, message)."""
    try:
        require_screen(svc, username, "draft")
        if fmt not in ("md", "txt"):
            raise Refused("choose Markdown (md) or plain text (txt)")
        ctrl = _control(svc, state)
        with svc.reader() as s:
            doc = repo.get_document(s, ctrl.document_id)
            title, status, doc_text = doc.title, doc.status, doc.text
            tpl = repo.get_template(s, doc.template_id).name if doc.template_id else None
        with ctrl.lock:
            base = ctrl.base
            text = doc_text if status != "draft" and doc_text else svc.tokenizer.decode(base.tokens.tolist()) if base \
                is not None else ""
            step = base.index if base is not None else 0
        meta = [("document", ctrl.document_id), ("status", status.replace("_", " ")), ("template", tpl or "none"),
                ("run", ctrl.run_id), ("step", f"{step} of {ctrl.total}"), ("model", svc.model_id)]
        text = _clean(text)
        body = render.to_markdown(title, text, meta) if fmt == "md" else render.to_plain_text(title, text)
        folder = svc.temp_dir / secrets.token_hex(8)
        folder.mkdir(parents=True)
        path = folder / f"{_safe_filename(title)}.{fmt}"
        path.write_text(body, encoding="utf-8")
        return str(path), f"download ready: {path.name}"
    except Exception as exc:  # noqa: BLE001
        return None, explain(exc)


# =================================================================== review screen


@dataclass
class ReviewUpdate:
    message: str = ""
    kind: str = "info"
    queue: list[list[Any]] | None = None
    document_html: str | None = None
    history_html: str | None = None
    state: ReviewState | None = None


def _review_error(message: str) -> ReviewUpdate:
    return ReviewUpdate(message=message, kind="error")


QUEUE_HEADERS = ["document", "title", "template", "by", "updated (UTC)", "version"]


def _queue(svc: Any) -> list[list[Any]]:
    with svc.reader() as s:
        rows = []
        for d in repo.documents_awaiting_review(s):
            rows.append([d.id, d.title, d.template.name if d.template else "", d.updated_by.name if d.updated_by else "",
                         d.updated_at.strftime("%Y-%m-%d %H:%M"), d.version])
        return rows


@safe(_review_error)
def review_queue(svc: Any, username: str | None) -> ReviewUpdate:
    require_screen(svc, username, "review")
    q = _queue(svc)
    return ReviewUpdate(message=f"{len(q)} draft(s) awaiting review", queue=q)


@safe(_review_error)
def open_review(svc: Any, username: str | None, document_id: Any) -> ReviewUpdate:
    """The document and its history (audit events about it, edits, pins, reviews)."""
    from storage.audit import AuditFilter, list_events

    require_screen(svc, username, "review")
    doc_id = _int(document_id, "document", 1, 2**62)
    with svc.reader() as s:
        doc = repo.get_document(s, doc_id)
        meta = [("document", doc.id), ("status", doc.status.replace("_", " ")), ("version", doc.version),
                ("template", doc.template.name if doc.template else "none"),
                ("created by", doc.created_by.name if doc.created_by else ""),
                ("updated (UTC)", doc.updated_at.strftime("%Y-%m-%d %H:%M:%S"))]
        doc_html = render.document_html(doc.title, doc.text, meta)
        events = list_events(s, AuditFilter(document_id=doc_id), limit=500, newest_first=False)
        rows = [[e.seq, e.ts.strftime("%Y-%m-%d %H:%M:%S"), e.actor, e.role, e.action, _short(e.old_value),
                 _short(e.new_value), e.reason or ""] for e in events]
        version, title = doc.version, doc.title
    hist = render.table_html(["#", "when (UTC)", "who", "role", "action", "old", "new", "reason"], rows)
    return ReviewUpdate(message=f"reviewing document {doc_id} ({title}), version {version}", document_html=doc_html,
                        history_html=hist, state=ReviewState(document_id=doc_id, document_version=version))


def _short(value: str | None, n: int = 120) -> str:
    if not value:
        return ""
    return value if len(value) <= n else value[: n - 1] + "…"


@safe(_review_error)
def sign_review(svc: Any, username: str | None, rstate: ReviewState | None, decision: str, reason: str,
                password: str) -> ReviewUpdate:
    """Approve or reject the version on screen, signed by re-entering the password; the review row
    records the meaning of the signature, the signer, the time and the method, apart from the reason."""
    from storage.audit import append_event

    actor = require_permission(svc, username, "review", "approve or reject drafts")
    require_screen(svc, username, "review")
    if rstate is None or rstate.document_id is None or rstate.document_version is None:
        raise Refused("open a draft from the queue first")
    if decision not in SIGNATURE_MEANINGS:
        raise Refused("choose approve or reject")
    reason = (reason or "").strip()
    if decision == "reject" and not reason:
        raise Refused("say why you reject the draft")
    delay = svc.guard.delay_for(actor.name)
    if delay:
        time.sleep(delay)
    with transaction(svc.factory) as s:
        user = repo.get_user(s, actor.name)
        ok = isinstance(password, str) and bool(password) and repo.verify_password(user.password_hash, password)
        if not ok:
            append_event(s, actor.name, actor.role, "signature.failed", "document", rstate.document_id,
                         new={"decision": decision, "version": rstate.document_version})
    if not ok:
        svc.guard.failed(actor.name)
        raise Refused("the password is not right: the signature was not applied")
    svc.guard.succeeded(actor.name)
    with transaction(svc.factory) as s:
        repo.record_review(s, document_id=rstate.document_id, actor=actor.name, decision=decision,
                           expected_version=rstate.document_version, reason=reason or None,
                           signature_meaning=SIGNATURE_MEANINGS[decision], signature_method="password re-entry")
    verb = "approved" if decision == "approve" else "rejected"
    return ReviewUpdate(message=f"document {rstate.document_id} {verb} and signed", kind="ok", queue=_queue(svc),
                        state=ReviewState(), document_html="", history_html="")


# =================================================================== audit screen


@dataclass
class AuditQuery:
    user: str = ""
    role: str = ""
    action: str = ""
    document: Any = None
    template: str = ""
    since: str = ""
    until: str = ""


def _parse_day(value: Any, what: str) -> datetime | None:
    if value in (None, ""):
        return None
    if isinstance(value, (int, float)):  # gr.DateTime gives a timestamp
        return datetime.fromtimestamp(float(value), timezone.utc)
    if isinstance(value, datetime):
        return value if value.tzinfo else value.replace(tzinfo=timezone.utc)
    try:
        ts = datetime.fromisoformat(str(value).strip())
    except ValueError:
        raise Refused(f"{what}: write a date as YYYY-MM-DD (optionally with a time)") from None
    return ts.replace(tzinfo=timezone.utc) if ts.tzinfo is None else ts.astimezone(timezone.utc)


def audit_filter(svc: Any, q: AuditQuery) -> Any:
    from storage.audit import AuditFilter
    from storage.models import ROLES

    template_id = None
    if q.template:
        with svc.reader() as s:
            template_id = repo.get_template_by_name(s, q.template).id
    role = q.role or None
    if role is not None and role not in ROLES:
        raise Refused(f"unknown role {role!r}")
    doc = None
    if q.document not in (None, ""):
        doc = _int(q.document, "document", 1, 2**62)
    since = _parse_day(q.since, "from")
    until = _parse_day(q.until, "until")
    if until is not None and isinstance(q.until, str) and len(q.until.strip()) == 10:
        until = until + timedelta(days=1)  # a date means "through that day"
    return AuditFilter(user=(q.user or "").strip() or None, role=role, action=q.action or None,
                       document_id=doc, template_id=template_id, since=since, until=until)


AUDIT_HEADERS = ["seq", "when (UTC)", "user", "role", "action", "object", "document", "template", "old", "new",
                 "reason"]


@dataclass
class AuditUpdate:
    message: str = ""
    kind: str = "info"
    rows: list[list[Any]] | None = None
    charts: dict[str, Any] | None = None
    file: str | None = None


def _audit_error(message: str) -> AuditUpdate:
    return AuditUpdate(message=message, kind="error")


@safe(_audit_error)
def audit_table(svc: Any, username: str | None, q: AuditQuery, limit: int = 500) -> AuditUpdate:
    from storage.audit import list_events

    require_permission(svc, username, "audit.read", "read the audit trail")
    require_screen(svc, username, "audit")
    f = audit_filter(svc, q)
    with svc.reader() as s:
        events = list_events(s, f, limit=limit)
        rows = [[e.seq, e.ts.strftime("%Y-%m-%d %H:%M:%S"), e.actor, e.role, e.action, f"{e.object_type} {e.object_id}",
                 e.document_id, e.template_id, _short(e.old_value, 80), _short(e.new_value, 80), e.reason or ""]
                for e in events]
    more = " (newest shown; export for all)" if len(rows) >= limit else ""
    return AuditUpdate(message=f"{len(rows)} event(s){more}", rows=rows)


@safe(_audit_error)
def feedback_charts(svc: Any, username: str | None, days: int = 30) -> AuditUpdate:
    """Frames for the QA charts: events per day, edits per template, edits per term, pin rate per model."""
    import pandas as pd
    from sqlalchemy import func, select

    from storage.models import AuditEvent, Pin, Run

    require_permission(svc, username, "feedback.read", "read QA feedback")
    require_screen(svc, username, "audit")
    since = datetime.now(timezone.utc) - timedelta(days=days)
    with svc.reader() as s:
        day = func.date(AuditEvent.ts)
        per_day = [(str(d), int(n)) for d, n in s.execute(
            select(day, func.count()).where(AuditEvent.ts >= since).group_by(day).order_by(day))]
        by_template = repo.feedback_counts(s, "template")
        by_term = repo.feedback_counts(s, "term")[:15]
        runs = dict(s.execute(select(Run.model_id, func.count(Run.id)).group_by(Run.model_id)).all())
        pins = dict(s.execute(select(Run.model_id, func.count(Pin.id)).join(Run, Run.id == Pin.run_id)
                              .group_by(Run.model_id)).all())
    charts = {
        "per_day": pd.DataFrame(per_day, columns=["day", "events"]),
        "per_template": pd.DataFrame([(r.key, r.edits, r.pins) for r in by_template],
                                     columns=["template", "edits", "pins"]),
        "per_term": pd.DataFrame([(r.key, r.edits, r.pins) for r in by_term], columns=["term", "edits", "pins"]),
        "pin_rate": pd.DataFrame([(m, pins.get(m, 0) / n if n else 0.0, n) for m, n in runs.items()],
                                 columns=["model", "pins per run", "runs"]),
    }
    return AuditUpdate(message="QA feedback updated", charts=charts)


@safe(_audit_error)
def export_audit(svc: Any, username: str | None, q: AuditQuery, fmt: str) -> AuditUpdate:
    """Write the filtered trail (role-checked; the export is itself an audit event) and hand back a copy."""
    from storage.export import export_audit as write_export

    actor = require_permission(svc, username, "export", "export the audit trail")
    require_screen(svc, username, "audit")
    if fmt not in FORMATS:
        raise Refused(f"choose one of {', '.join(FORMATS)}")
    f = audit_filter(svc, q)
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    target = svc.exports_dir / f"audit-{stamp}-{secrets.token_hex(3)}.{fmt}"
    record = None
    try:
        with transaction(svc.factory) as s:
            record = write_export(s, target, fmt, actor=actor.name, filters=f)
            rows = record.row_count
    except BaseException:
        if record is not None:
            Path(record.path).unlink(missing_ok=True)
        raise
    folder = svc.temp_dir / secrets.token_hex(8)
    folder.mkdir(parents=True)
    copy = folder / target.name
    shutil.copyfile(target, copy)
    return AuditUpdate(message=f"exported {rows} event(s) as {fmt.upper()}", kind="ok", file=str(copy))


@safe(_audit_error)
def verify_trail(svc: Any, username: str | None) -> AuditUpdate:
    from storage.audit import verify_chain

    require_permission(svc, username, "audit.read", "verify the audit trail")
    require_screen(svc, username, "audit")
    with svc.reader() as s:
        result = verify_chain(s)
    if result.ok:
        return AuditUpdate(message=f"✔ {result.message}", kind="ok")
    return AuditUpdate(message=f"✘ audit trail BROKEN at event {result.broken_seq}: {result.message}", kind="error")


def audit_choices(svc: Any) -> dict[str, list[str]]:
    from sqlalchemy import select

    from storage.models import ROLES, AuditEvent

    with svc.reader() as s:
        actions = sorted(s.scalars(select(AuditEvent.action).distinct()))
        users = [u.name for u in repo.list_users(s)]
        templates = [t.name for t in repo.list_templates(s)]
    return {"actions": actions, "users": users, "roles": list(ROLES), "templates": templates}


# =================================================================== admin screen


@dataclass
class AdminUpdate:
    message: str = ""
    kind: str = "info"
    rows: list[list[Any]] | None = None


def _admin_error(message: str) -> AdminUpdate:
    return AdminUpdate(message=message, kind="error")


USER_HEADERS = ["user", "role", "state", "failed logins", "last login (UTC)", "created (UTC)"]


def _user_rows(svc: Any) -> list[list[Any]]:
    with svc.reader() as s:
        return [[u.name, u.role, "disabled" if u.disabled else "active", u.failed_logins,
                 u.last_login_at.strftime("%Y-%m-%d %H:%M") if u.last_login_at else "",
                 u.created_at.strftime("%Y-%m-%d %H:%M")] for u in repo.list_users(s)]


@safe(_admin_error)
def list_users(svc: Any, username: str | None) -> AdminUpdate:
    require_screen(svc, username, "admin")
    rows = _user_rows(svc)
    return AdminUpdate(message=f"{len(rows)} user(s)", rows=rows)


@safe(_admin_error)
def add_user(svc: Any, username: str | None, name: str, role: str, password: str) -> AdminUpdate:
    actor = require_permission(svc, username, "user.manage", "manage users")
    with transaction(svc.factory) as s:
        repo.create_user(s, (name or "").strip(), role, password or "", actor=actor.name)
    return AdminUpdate(message=f"added {name.strip()} ({role})", kind="ok", rows=_user_rows(svc))


@safe(_admin_error)
def change_role(svc: Any, username: str | None, name: str, role: str, reason: str) -> AdminUpdate:
    actor = require_permission(svc, username, "user.manage", "manage users")
    with transaction(svc.factory) as s:
        repo.set_role(s, (name or "").strip(), role, actor=actor.name, reason=reason)
    return AdminUpdate(message=f"{name.strip()} is now {role}", kind="ok", rows=_user_rows(svc))


@safe(_admin_error)
def set_enabled(svc: Any, username: str | None, name: str, enabled: bool, reason: str) -> AdminUpdate:
    actor = require_permission(svc, username, "user.manage", "manage users")
    change = repo.enable_user if enabled else repo.disable_user
    with transaction(svc.factory) as s:
        change(s, (name or "").strip(), actor=actor.name, reason=reason)
    return AdminUpdate(message=f"{name.strip()} {'enabled' if enabled else 'disabled'}", kind="ok",
                       rows=_user_rows(svc))


def whoami(svc: Any, username: str | None) -> tuple[str, list[str]]:
    """(a line for the header, the screens this user may open)."""
    try:
        from app.auth import SCREENS, actor_for

        actor = actor_for(svc, username)
        return f"{actor.name} · {actor.role}", [k for k, roles in SCREENS.items() if actor.role in roles]
    except Exception as exc:  # noqa: BLE001
        return explain(exc), []

