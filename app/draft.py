"""The draft screen's handlers: start a draft at a pace, pause and resume it, go back to a step,
reopen a run, accept, reject, discard, download. Steering (pin, pin a span, lock a term, edit a
span) is app.steering. Plain functions, testable without a browser (see app.common).

The run life cycle (streaming, branching, reloading) is app.runs; what the screen shows after each
handler is an app.draft_view.DraftUpdate.

Audit events
  generate -> run.start; pin -> pin.add; unpin -> pin.remove; edit -> edit;
  lock term -> pin.lock_term; branch -> run.start (with parent); pause -> run.paused;
  accept -> document.update (status awaiting_review) + run.finished;
  reject -> run.discarded (reason); discard -> document.update (status discarded)
"""

from __future__ import annotations

import dataclasses
import re
import secrets
from collections.abc import Iterator
from datetime import datetime, timezone
from typing import Any

from app import draft_view, render, run_store, runs
from app.auth import require_permission, require_screen
from app.common import Refused, as_float, as_int, as_text, explain, safe, storable
from app.draft_view import DraftUpdate, error_update
from app.runs import RunControl
from app.services import Services
from app.state import DraftState
from engine.config import for_kind
from engine.template import expand
from storage import repository as repo
from storage.db import transaction

FREE_LENGTH = "Free length"
# the least seconds between two shown steps, by the page's pace setting
PACES = {"watch": 0.25, "slow": 1.0, "fast": 0.0}
PACE_LABELS = [("Watch (4 steps a second)", "watch"), ("Slow (1 step a second)", "slow"),
               ("As fast as possible", "fast")]
MAX_TITLE_CHARS = 200


def pace_seconds(pace: Any) -> float:
    if not isinstance(pace, str) or pace not in PACES:
        raise Refused(f"choose a pace: {', '.join(PACES)}")
    return PACES[pace]


def template_choices(svc: Services) -> list[str]:
    with svc.reader() as s:
        return [FREE_LENGTH] + [t.name for t in repo.list_templates(s)]


def default_steps(svc: Services, template: Any, current: Any) -> Any:
    """The Steps field once the Template field changes to `template`: the model's default for that
    kind of draft (engine.config.for_kind: free-length drafts may take more steps than a
    template's), where the field is empty or holds a kind's default; a number the person typed
    stays."""
    cfg = svc.ckpt.sampler_cfg
    defaults = {cfg.steps, for_kind(cfg, free_length=True).steps}
    try:
        mine = current not in (None, "") and int(current) not in defaults
    except (TypeError, ValueError, OverflowError):
        mine = True  # not a number: left for Generate to refuse with its message
    if mine:
        return current
    return for_kind(cfg, free_length=template in (None, "", FREE_LENGTH)).steps


def generate(svc: Services, username: str | None, state: DraftState | None, *, template: str | None, length: Any,
             steps: Any, seed: Any, temperature: Any, title: Any = "", pace: Any = "fast") -> Iterator[DraftUpdate]:
    """Start a new document and run it, yielding every step as it is computed (at the pace's
    rate: PACES)."""
    try:
        actor = require_permission(svc, username, "run.create", "start drafts")
        require_screen(svc, username, "draft")
        lim = svc.limits
        n_steps = as_int(steps, "steps", 1, lim.max_steps)
        seed_v = as_int(seed, "seed", 0, lim.max_seed)
        temp_v = as_float(temperature, "temperature", 0.05, 5.0)
        title = as_text(title, "the title", MAX_TITLE_CHARS).strip()
        pace_s = pace_seconds(pace)
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
            n_tokens = as_int(length, "length", 1, lim.max_length)
        # a run has one step count, the one it ran: the model's default by kind (free_steps) is not its setting
        model_cfg = {k: v for k, v in dataclasses.asdict(svc.ckpt.sampler_cfg).items() if k != "free_steps"}
        settings = {**model_cfg, "steps": n_steps, "seed": seed_v, "temperature": temp_v,
                    "length": n_tokens, "template": template}
        stamp = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
        title = title or f"{template or 'Free draft'} · {stamp}"
        with transaction(svc.factory) as s:
            doc = repo.create_document(s, actor=actor.name, title=title[:MAX_TITLE_CHARS], template_id=tpl_id)
            run = repo.create_run(s, document_id=doc.id, actor=actor.name, model_id=svc.model_id,
                                  model_checksum=svc.ckpt.checksum, seed=seed_v, sampler_settings=settings)
            doc_id, run_id = doc.id, run.id
            ctrl = RunControl(run_id=run_id, document_id=doc_id, template_id=tpl_id, user=actor.name,
                              settings=settings, held=held, kinds=kinds, pace_s=pace_s, model_id=svc.model_id)
            run_store.save(s, svc, ctrl)
        svc.runs.put(ctrl)
    except Exception as exc:  # noqa: BLE001
        yield error_update(explain(exc))
        return
    new_state = DraftState(document_id=doc_id, run_id=run_id)
    yield from runs.stream(svc, actor, ctrl, new_state, first_note=f"document {doc_id}, run {run_id}")


def resume(svc: Services, username: str | None, state: DraftState | None, pace: Any = None) -> Iterator[DraftUpdate]:
    """Continue the run on screen from its step; from an earlier step it continues as a new branch,
    and a complete draft that was changed is refined as a new branch (app.runs glossary)."""
    try:
        actor = require_permission(svc, username, "run.step", "continue drafts")
        ctrl = runs.control_for(svc, state)
        with ctrl.lock:
            if ctrl.streaming:
                raise Refused("this draft is already being generated")
            if pace is not None:
                ctrl.pace_s = pace_seconds(pace)
            base = ctrl.base
            assert base is not None
            if ctrl.complete:
                raise Refused("the draft is complete: pin, edit or lock a term and Resume refines it around the "
                              "change, or move the step slider back to continue from an earlier step")
            if ctrl.branch_from is not None:
                ctrl = runs.branch(svc, actor, ctrl)
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
        yield error_update(explain(exc))
        return
    yield from runs.stream(svc, actor, ctrl, new_state, first_note="resumed")


@safe(error_update)
def pause(svc: Services, username: str | None, state: DraftState | None) -> DraftUpdate:
    """Ask the streaming run to stop after the current step (it stays resumable)."""
    require_permission(svc, username, "run.status", "pause drafts")
    ctrl = runs.control_for(svc, state)
    with ctrl.lock:
        if not ctrl.streaming:
            return DraftUpdate(message="nothing is being generated: the draft is already paused", kind="info")
        ctrl.pause_requested = True
    # no message: the stream's own "Paused at step N" is the confirmation, and a "pausing…" sent
    # from here could reach the browser after it and overwrite it
    return DraftUpdate(kind="info")


@safe(error_update)
def set_pace(svc: Services, username: str | None, state: DraftState | None, pace: Any) -> DraftUpdate:
    """Change the pace of the run on screen, streaming or not (in effect from the next step)."""
    require_screen(svc, username, "draft")
    seconds = pace_seconds(pace)
    ctrl = svc.runs.get(state.run_id if state else None)
    if ctrl is None:
        return DraftUpdate()
    ctrl.pace_s = seconds
    return DraftUpdate()


@safe(error_update)
def view_step(svc: Services, username: str | None, state: DraftState | None, index: Any) -> DraftUpdate:
    """Show recorded step `index`. While paused, pins and edits then apply to that step and
    Resume continues from it as a new branch (the run on screen is kept)."""
    require_screen(svc, username, "draft")
    ctrl = runs.control_for(svc, state)
    with ctrl.lock:
        if not ctrl.frames:
            raise Refused("no steps recorded yet")
        k = as_int(index, "step", 0, ctrl.total)
        if k not in ctrl.frames:
            k = max(i for i in ctrl.frames if i <= k) if any(i <= k for i in ctrl.frames) else min(ctrl.frames)
        frame = ctrl.frames[k]
        if ctrl.streaming:
            return DraftUpdate(payload=draft_view.payload(svc, ctrl, frame, "generating: pause to continue from here"),
                               step=k, total=ctrl.total, message=f"showing step {k} (the run continues)")
        last = ctrl.last_index
        if k == last:
            if ctrl.branch_from is not None:
                with runs.act(svc, ctrl):
                    ctrl.restore_live()
            up = draft_view.view(svc, ctrl, "complete" if k >= ctrl.total else "paused")
            return dataclasses.replace(up, message=f"step {k}, the latest of run {ctrl.run_id}")
        with runs.act(svc, ctrl):
            ctrl.go_back(k)
        up = draft_view.view(svc, ctrl, "earlier step")
    return dataclasses.replace(up, message=f"step {k}: change pins or edit, then Resume continues from here as a new "
                               "branch (this run is kept)")


@safe(error_update)
def open_run(svc: Services, username: str | None, state: DraftState | None, run_id: Any) -> DraftUpdate:
    """Reopen a run (branch) of the document on screen."""
    require_screen(svc, username, "draft")
    rid = as_int(run_id, "run", 1, 2**62)
    with svc.reader() as s:
        run = repo.get_run(s, rid)
        doc_id = run.document_id
    if state is not None and state.document_id is not None and state.document_id != doc_id:
        raise Refused(f"run {rid} belongs to another document")
    ctrl = runs.control_for(svc, DraftState(document_id=doc_id, run_id=rid))
    with ctrl.lock:
        up = draft_view.view(svc, ctrl, "reopened")
    new_state = DraftState(document_id=doc_id, run_id=rid)
    return dataclasses.replace(up, state=new_state, runs=draft_view.runs_of(svc, doc_id, rid),
                               message=f"reopened run {rid}")


def on_screen(svc: Services, username: str | None, state: DraftState | None, run_ref: Any) -> DraftState | None:
    """The run on the page: the session's state, or, when the server lost it (a restart, another
    replica), the run id the page still shows (`run_ref`). None when there is neither."""
    if state is not None and state.run_id is not None:
        return state
    try:
        rid = as_int(run_ref, "run", 1, 2**62)
        require_screen(svc, username, "draft")
        with svc.reader() as s:
            return DraftState(document_id=repo.get_run(s, rid).document_id, run_id=rid)
    except Exception:  # noqa: BLE001 - no usable id on the page: the handler says "no draft on screen"
        return state


def come_back(svc: Services, username: str | None) -> DraftUpdate | None:
    """On opening the page: the person's last open draft (started by them, still running or
    paused, its document a draft), shown again so that Resume continues it; None if there is none."""
    try:
        require_screen(svc, username, "draft")
        with svc.reader() as s:
            run = repo.last_open_run(s, username or "")
            if run is None:
                return None
            rid, doc_id = run.id, run.document_id
        up = open_run(svc, username, None, rid)
    except Exception:  # noqa: BLE001 - the page opens empty, as for a first visit
        return None
    if up.kind == "error":
        return None
    step = f"step {up.step} of {up.total}" if up.step is not None else "no step yet"
    return dataclasses.replace(up, message=f"Your last draft is open again (document {doc_id}, run {rid}, {step}): "
                               "Resume continues it.", kind="info")


def _finish_checks(ctrl: RunControl) -> None:
    if ctrl.streaming:
        raise Refused("pause the run first")


@safe(error_update)
def accept(svc: Services, username: str | None, state: DraftState | None) -> DraftUpdate:
    """Accept the complete draft: its text becomes the document's, which awaits review."""
    actor = require_permission(svc, username, "document.update", "accept drafts")
    ctrl = runs.control_for(svc, state)
    with ctrl.lock:
        _finish_checks(ctrl)
        base = ctrl.base
        if base is None or base.index < ctrl.total or (ctrl.branch_from is not None and not ctrl.refining):
            raise Refused("the draft is not complete: resume it to the last step first")
        text = storable(svc.tokenizer.decode(base.tokens.tolist()))
        with transaction(svc.factory) as s:
            run = repo.get_run(s, ctrl.run_id)
            if run.status not in ("finished", "discarded"):
                repo.set_run_status(s, ctrl.run_id, actor=actor.name, status="finished", reason="accepted")
            doc = repo.get_document(s, ctrl.document_id)
            if doc.status != "draft":
                raise Refused(f"document {doc.id} is {doc.status.replace('_', ' ')}: it cannot be accepted again")
            repo.update_document(s, doc.id, actor=actor.name, expected_version=doc.version, text=text,
                                 status="awaiting_review", reason=f"accepted run {ctrl.run_id}")
        up = draft_view.view(svc, ctrl, "accepted")
    return dataclasses.replace(up, message=f"accepted: document {ctrl.document_id} now awaits review", kind="ok",
                               runs=draft_view.runs_of(svc, ctrl.document_id, ctrl.run_id))


@safe(error_update)
def reject(svc: Services, username: str | None, state: DraftState | None, reason: str) -> DraftUpdate:
    """Reject the run's draft with a reason (recorded as QA feedback); the document stays a draft."""
    actor = require_permission(svc, username, "run.status", "reject drafts")
    if not (reason or "").strip():
        raise Refused("say why you reject the draft (the reason is recorded)")
    ctrl = runs.control_for(svc, state)
    with ctrl.lock:
        _finish_checks(ctrl)
        with runs.act(svc, ctrl) as s:
            repo.set_run_status(s, ctrl.run_id, actor=actor.name, status="discarded", reason=reason.strip())
            ctrl.done = True
    return DraftUpdate(message=f"run {ctrl.run_id} rejected; generate again or reopen another branch", kind="ok",
                       runs=draft_view.runs_of(svc, ctrl.document_id, ctrl.run_id))


@safe(error_update)
def discard(svc: Services, username: str | None, state: DraftState | None) -> DraftUpdate:
    """Discard the whole document (its runs and history are kept in the trail)."""
    actor = require_permission(svc, username, "document.update", "discard drafts")
    ctrl = runs.control_for(svc, state)
    with ctrl.lock:
        _finish_checks(ctrl)
        with runs.act(svc, ctrl) as s:
            doc = repo.get_document(s, ctrl.document_id)
            repo.update_document(s, doc.id, actor=actor.name, expected_version=doc.version, status="discarded",
                                 reason="discarded in the draft screen")
            ctrl.done = True
    return DraftUpdate(message=f"document {ctrl.document_id} discarded", kind="ok", payload=render.EMPTY_PAYLOAD,
                       step=0, total=1, state=DraftState(), runs=[])


def _safe_filename(title: str) -> str:
    name = re.sub(r"[^A-Za-z0-9._-]+", "_", title).strip("._") or "draft"
    return name[:60]


def download(svc: Services, username: str | None, state: DraftState | None, fmt: str) -> tuple[str | None, str]:
    """Write the draft on screen (the accepted text once accepted) as Markdown or plain text;
    returns (file path or None, message)."""
    try:
        require_screen(svc, username, "draft")
        if fmt not in ("md", "txt"):
            raise Refused("choose Markdown (md) or plain text (txt)")
        ctrl = runs.control_for(svc, state)
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
        text = storable(text)
        body = render.to_markdown(title, text, meta) if fmt == "md" else render.to_plain_text(title, text)
        folder = svc.temp_dir / secrets.token_hex(8)
        folder.mkdir(parents=True)
        path = folder / f"{_safe_filename(title)}.{fmt}"
        path.write_text(body, encoding="utf-8")
        return str(path), f"download ready: {path.name}"
    except Exception as exc:  # noqa: BLE001
        return None, explain(exc)
