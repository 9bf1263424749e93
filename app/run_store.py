"""A run's control as the database keeps it: the state that `app.runs.RunControl` holds in memory,
written with every act and every step (storage.repository.run_state), and the control rebuilt
from the database alone, in any process, at any step.

Glossary
  state       the JSON object stored for a run: the held positions with their kinds and pin rows,
              the step the run continues from (`base`, stored whole: after an edit or a pin of a
              token the view showed it differs from every recorded step), the layouts after
              length-changing edits, the branch point and the kept last step (`live`) while an
              earlier step is shown, and whether the draft is done
  frames      rebuilt from the recorded steps of the run's lineage, with the kinds and layout
              each step was recorded with (steps.kinds / steps.layout)
  legacy      a run recorded before run states existed: held positions are rebuilt from the
              template and the run's active pins, as well as the steps allow
Tensors are stored as base64 of little-endian int32 / float32 / uint8 arrays: exact and compact.
"""

from __future__ import annotations

import base64
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor

from app.common import Refused
from app.render import Frame
from engine import sampler
from engine.sampler import Step
from engine.template import expand
from storage import repository as repo

if TYPE_CHECKING:
    from sqlalchemy.orm import Session

    from app.runs import RunControl
    from app.services import Services

STATE_FORMAT = 1


# ------------------------------------------------------------------------------ tensors and steps
def _pack(t: Tensor, dtype: torch.dtype) -> str:
    return base64.b64encode(t.detach().to("cpu", dtype).contiguous().numpy().tobytes()).decode("ascii")


def _unpack(text: str, dtype: torch.dtype) -> Tensor:
    data = bytearray(base64.b64decode(text.encode("ascii")))
    return torch.frombuffer(data, dtype=dtype).clone() if data else torch.zeros(0, dtype=dtype)


def step_to_json(step: Step) -> dict[str, Any]:
    return {"index": step.index, "t": step.t, "total": step.total_steps,
            "tokens": _pack(step.tokens, torch.int32), "confidence": _pack(step.confidence, torch.float32),
            "changed": _pack(step.changed, torch.uint8), "pinned": _pack(step.pinned, torch.uint8),
            "committed": None if step.committed is None else _pack(step.committed, torch.uint8)}


def step_from_json(d: dict[str, Any]) -> Step:
    committed = d.get("committed")
    return Step(index=int(d["index"]), t=float(d["t"]), total_steps=int(d["total"]),
                tokens=_unpack(d["tokens"], torch.int32).long(),
                confidence=_unpack(d["confidence"], torch.float32),
                changed=_unpack(d["changed"], torch.uint8).bool(),
                pinned=_unpack(d["pinned"], torch.uint8).bool(),
                committed=None if committed is None else _unpack(committed, torch.uint8).bool())


def _pairs(d: dict[int, Any]) -> list[list[Any]]:
    return [[int(k), v] for k, v in sorted(d.items())]


def _held_json(held: dict[int, int], kinds: dict[int, str], pin_rows: dict[int, int]) -> dict[str, Any]:
    return {"held": _pairs(held), "kinds": _pairs(kinds), "pin_rows": _pairs(pin_rows)}


def _held_from(d: dict[str, Any]) -> tuple[dict[int, int], dict[int, str], dict[int, int]]:
    return ({int(p): int(t) for p, t in d["held"]}, {int(p): str(k) for p, k in d["kinds"]},
            {int(p): int(i) for p, i in d["pin_rows"]})


def step_from_frame(frame: Frame, held: Mapping[int, int]) -> Step:
    """An engine Step equal to a recorded frame, held positions marked (to continue from)."""
    L = len(frame.token_ids)
    pinned = torch.zeros(L, dtype=torch.bool)  # (L,)
    for p in held:
        if 0 <= p < L:
            pinned[p] = True
    return Step(
        index=frame.index,
        t=sampler.time_grid(frame.total)[frame.index],
        tokens=torch.tensor(frame.token_ids, dtype=torch.long),  # (L,)
        confidence=torch.tensor(frame.confidence, dtype=torch.float32),  # (L,)
        changed=torch.tensor(frame.changed, dtype=torch.bool),  # (L,)
        pinned=pinned,
        total_steps=frame.total,
    )


def frame_from_step(step: Step, kinds: list[str], elapsed_ms: float | None = None, layout: int = 0) -> Frame:
    return Frame(
        index=step.index,
        total=step.total_steps,
        token_ids=[int(x) for x in step.tokens.tolist()],
        confidence=[float(x) for x in step.confidence.tolist()],
        changed=[bool(x) for x in step.changed.tolist()],
        kinds=kinds,
        elapsed_ms=elapsed_ms,
        layout=layout,
    )


# ------------------------------------------------------------------------------ control <-> state
def control_state(ctrl: RunControl) -> dict[str, Any]:
    """(ctrl.lock held) What the database keeps of a control (see the glossary)."""
    live = None
    if ctrl.live is not None:
        held, kinds, pin_rows, base, layout = ctrl.live
        live = {**_held_json(held, kinds, pin_rows), "base": step_to_json(base) if base is not None else None,
                "layout": layout}
    return {"format": STATE_FORMAT, **_held_json(ctrl.held, ctrl.kinds, ctrl.pin_rows),
            "base": step_to_json(ctrl.base) if ctrl.base is not None else None,
            "layout": ctrl.layout,
            "layout_parent": [[child, *parent] for child, parent in sorted(ctrl.layout_parent.items())],
            "branch_from": ctrl.branch_from, "view_step": ctrl.view_step, "done": ctrl.done, "live": live}


def apply_state(ctrl: RunControl, state: dict[str, Any]) -> None:
    """(ctrl.lock held) Put a stored state into a control (frames and settings are not in it)."""
    if state.get("format") != STATE_FORMAT:
        raise Refused(f"run {ctrl.run_id} was stored in a format this version cannot read "
                      f"({state.get('format')!r}): open it with the version that made it")
    ctrl.held, ctrl.kinds, ctrl.pin_rows = _held_from(state)
    ctrl.base = step_from_json(state["base"]) if state.get("base") else None
    ctrl.layout = int(state["layout"])
    ctrl.layout_parent = {int(c): (int(p), int(a), int(b), int(n)) for c, p, a, b, n in state["layout_parent"]}
    ctrl.branch_from = state.get("branch_from")
    ctrl.view_step = state.get("view_step")
    ctrl.done = bool(state.get("done"))
    live = state.get("live")
    if live is None:
        ctrl.live = None
    else:
        held, kinds, pin_rows = _held_from(live)
        ctrl.live = (held, kinds, pin_rows, step_from_json(live["base"]) if live.get("base") else None,
                     int(live["layout"]))


def save(session: Session, svc: Services, ctrl: RunControl, *, lease: bool = False) -> None:
    """(ctrl.lock held) Write the control's state in the caller's transaction; with lease, also
    claim or renew this process's lease. StaleWrite if another process wrote the run since."""
    ctrl.version = repo.save_run_state(session, ctrl.run_id, control_state(ctrl),
                                       expected_version=ctrl.version or None,
                                       owner=svc.instance if lease else None, lease_s=svc.lease_s if lease else None)


# ------------------------------------------------------------------------------ loading
def _frames(steps: list[repo.StepData], total: int, legacy_kinds: dict[int, str], legacy_len: int) -> dict[int, Frame]:
    out: dict[int, Frame] = {}
    prev: list[int] | None = None
    for sd in steps:
        changed = [False] * sd.n_tokens if prev is None or len(prev) != sd.n_tokens else \
            [a != b for a, b in zip(prev, sd.token_ids)]
        if sd.kinds is not None:
            kinds, layout = sd.kinds, sd.layout if sd.layout is not None else 0
        elif sd.n_tokens == legacy_len:
            kinds, layout = [legacy_kinds.get(i, "") for i in range(sd.n_tokens)], 0
        else:
            kinds, layout = [""] * sd.n_tokens, -1
        out[sd.step_index] = Frame(sd.step_index, total, sd.token_ids, sd.confidences, changed, kinds, layout=layout)
        prev = sd.token_ids
    return out


def read_into(svc: Services, ctrl: RunControl) -> None:
    """(ctrl.lock held) Rebuild the control's state and frames from the database, keeping what
    only this process has (the lock, whether it streams, the pace). Constraints changed: a step
    being computed is dropped."""
    with svc.reader() as s:
        run = repo.get_run(s, ctrl.run_id)
        doc = repo.get_document(s, run.document_id)
        steps = repo.list_steps(s, ctrl.run_id)
        stored = repo.get_run_state(s, ctrl.run_id)
        pins = repo.active_pins(s, run_id=ctrl.run_id) if stored is None else []
        layout = expand(repo.get_template(s, doc.template_id).body, svc.tokenizer) \
            if stored is None and doc.template_id is not None else None
        settings, status, model_id = dict(run.sampler_settings), run.status, run.model_id
    total = int(settings["steps"])
    ctrl.document_id, ctrl.template_id, ctrl.settings, ctrl.model_id = doc.id, doc.template_id, settings, model_id
    if stored is not None:
        ctrl.frames = _frames(steps, total, {}, -1)
        apply_state(ctrl, stored.state)
        ctrl.version = stored.version
    else:
        if not steps:
            raise Refused(f"run {ctrl.run_id} has no recorded steps to show")
        _legacy(ctrl, steps, pins, layout, total)
        ctrl.version = 0
    if status in ("finished", "discarded"):
        ctrl.done = True
    if ctrl.base is None and ctrl.frames:
        last = ctrl.frames[max(ctrl.frames)]
        ctrl.base = step_from_frame(last, ctrl.held)
        ctrl.view_step = last.index
    ctrl.changed_constraints()


def _legacy(ctrl: RunControl, steps: list[repo.StepData], pins: list[Any], layout: Any, total: int) -> None:
    last = steps[-1]
    L = last.n_tokens
    kinds: dict[int, str] = {}
    pin_rows: dict[int, int] = {}
    if layout is not None and layout.length == L:
        kinds.update({p: "template" for p in layout.pins})
    for pin in pins:
        for p in range(pin.span_start, min(pin.span_end, L)):
            kinds[p] = "pin" if pin.kind == "token" else "term" if pin.kind == "term" else "edit"
            pin_rows[p] = pin.id
    ctrl.held = {p: last.token_ids[p] for p in kinds}
    ctrl.kinds, ctrl.pin_rows = kinds, pin_rows
    ctrl.frames = _frames(steps, total, kinds, L)
    ctrl.base = step_from_frame(ctrl.frames[last.step_index], ctrl.held)
    ctrl.view_step = last.step_index
    ctrl.done = last.step_index == total
    ctrl.layout, ctrl.layout_parent, ctrl.branch_from, ctrl.live = 0, {}, None, None
