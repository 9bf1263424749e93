"""What the draft screen shows after a handler or a streamed step (DraftUpdate), and how a run on
the server becomes one.

Glossary
  DraftUpdate   message, the draft view payload (app.render), the step slider, the session state,
                the runs of the document; a field left None leaves that part of the page as it is.
                The page shows a streamed update's message in the status line and every other
                message (an act's confirmation or refusal) in the act line, so the stream never
                overwrites what an act said
  payload       the JSON value of the live draft view (app.render.draft_payload)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from app import render
from app.state import DraftState
from storage import repository as repo

if TYPE_CHECKING:
    from app.runs import RunControl
    from app.services import Services


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
    streamed: bool = False  # from the stream: its message is the stream's status, not an act's result


def error_update(message: str) -> DraftUpdate:
    return DraftUpdate(message=message, kind="error")


def run_label(run: Any, current: int | None) -> str:
    """"run 3 from run 1 step 4 · paused (on screen)": a run (storage row) in the reopen list."""
    parent = f" from run {run.parent_run_id} step {run.parent_step_index}" if run.parent_run_id else ""
    mark = " (on screen)" if run.id == current else ""
    return f"run {run.id}{parent} · {run.status}{mark}"


def runs_of(svc: Services, document_id: int | None, current: int | None) -> list[tuple[str, int]]:
    """(label, run id) of every run of the document, for the reopen list."""
    if document_id is None:
        return []
    with svc.reader() as s:
        return [(run_label(r, current), r.id) for r in repo.list_runs(s, document_id)]


def payload(svc: Services, ctrl: RunControl, frame: render.Frame, status: str = "") -> dict[str, Any]:
    """The draft view's value for `frame` of the run."""
    tok = svc.tokenizer
    return render.draft_payload(tok.pieces(frame.token_ids), frame, special=tok.special_ids, status=status,
                                run_id=ctrl.run_id, end=(tok.eos_id,))


def view(svc: Services, ctrl: RunControl, status: str = "") -> DraftUpdate:
    """(ctrl.lock held) The run as a pin / edit would find it: its live frame, step and text."""
    frame = ctrl.live_frame()
    return DraftUpdate(payload=payload(svc, ctrl, frame, status), step=frame.index, total=ctrl.total,
                       text=svc.tokenizer.decode(frame.token_ids), streaming=ctrl.streaming)
