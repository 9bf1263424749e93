"""Server-side control of the runs being drafted: what a running generator reads between steps.

Glossary
  RunControl  one per generation run (keyed by run id): the held positions and their kinds, the
              step to continue from (`base`), the recorded frames of the run's lineage, and the
              flags the page sets while the generator streams (pause, changed constraints).
              Its lock is taken by the generator between steps and by every pin / edit handler,
              so a pin clicked during a run is in effect from the next step: the generator drops a
              step that was computed while the constraints changed and recomputes it.
  held        position -> token id the sampler must keep (template text, pins, edited spans)
  kind        why a position is held: "template", "pin", "term" (lock term) or "edit"
  base        the engine Step the next step continues from (the last recorded one, or an earlier
              one the person went back to, or the result of an edit)
  branch_from the step index `base` was taken from when it is not the last recorded step:
              continuing then starts a new run (a branch); the old one is kept
Nothing here holds model tensors beyond the current step's small (L,) tensors.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import torch

from app.render import Frame
from engine.sampler import Step

MAX_RUNS = 256  # run controls kept in memory (least recently used dropped; they reload from the database)


@dataclass
class RunControl:
    run_id: int
    document_id: int
    template_id: int | None
    user: str  # who started it
    settings: dict[str, Any]  # steps, seed, temperature, top_p, greedy_last, length, template
    held: dict[int, int] = field(default_factory=dict)
    kinds: dict[int, str] = field(default_factory=dict)
    pin_rows: dict[int, int] = field(default_factory=dict)  # position -> storage pin id (pins and terms)
    frames: dict[int, Frame] = field(default_factory=dict)  # step index -> frame, this run's lineage
    base: Step | None = None
    branch_from: int | None = None
    view_step: int | None = None
    live: tuple[Any, ...] | None = None  # (held, kinds, pin_rows, base) of the last step while an earlier one is shown
    generation: int = 0  # bumped on every change of held / base: a step computed before is dropped
    streaming: bool = False
    pause_requested: bool = False
    done: bool = False
    lock: threading.RLock = field(default_factory=threading.RLock, repr=False)

    @property
    def total(self) -> int:
        return int(self.settings["steps"])

    @property
    def last_index(self) -> int:
        return max(self.frames) if self.frames else -1

    def kinds_list(self, length: int) -> list[str]:
        return [self.kinds.get(i, "") for i in range(length)]

    def changed_constraints(self) -> None:
        """Call (lock held) after changing held / kinds / base: the next step uses them."""
        self.generation += 1


class RunRegistry:
    """Run controls by run id, least recently used first out."""

    def __init__(self, capacity: int = MAX_RUNS) -> None:
        self._runs: OrderedDict[int, RunControl] = OrderedDict()
        self._lock = threading.Lock()
        self.capacity = capacity

    def get(self, run_id: int | None) -> RunControl | None:
        if run_id is None:
            return None
        with self._lock:
            ctrl = self._runs.get(run_id)
            if ctrl is not None:
                self._runs.move_to_end(run_id)
            return ctrl

    def put(self, ctrl: RunControl) -> None:
        with self._lock:
            self._runs[ctrl.run_id] = ctrl
            self._runs.move_to_end(ctrl.run_id)
            while len(self._runs) > self.capacity:
                victim_id, victim = next(iter(self._runs.items()))
                if victim.streaming:  # never drop a run that is streaming
                    self._runs.move_to_end(victim_id)
                    break
                del self._runs[victim_id]

    def __len__(self) -> int:
        return len(self._runs)


def step_from_frame(frame: Frame, held: Mapping[int, int]) -> Step:
    """An engine Step equal to a recorded frame, held positions marked (to continue from)."""
    L = len(frame.token_ids)
    pinned = torch.zeros(L, dtype=torch.bool)  # (L,)
    for p in held:
        if 0 <= p < L:
            pinned[p] = True
    return Step(
        index=frame.index,
        t=(frame.total - frame.index) / frame.total,
        tokens=torch.tensor(frame.token_ids, dtype=torch.long),  # (L,)
        confidence=torch.tensor(frame.confidence, dtype=torch.float32),  # (L,)
        changed=torch.tensor(frame.changed, dtype=torch.bool),  # (L,)
        pinned=pinned,
        total_steps=frame.total,
    )


def frame_from_step(step: Step, kinds: list[str], elapsed_ms: float | None = None) -> Frame:
    return Frame(
        index=step.index,
        total=step.total_steps,
        token_ids=[int(x) for x in step.tokens.tolist()],
        confidence=[float(x) for x in step.confidence.tolist()],
        changed=[bool(x) for x in step.changed.tolist()],
        kinds=kinds,
        elapsed_ms=elapsed_ms,
    )


def shift_positions(d: Mapping[int, Any], start: int, end: int, new_len: int) -> dict[int, Any]:
    """Positions after replacing [start, end) by new_len tokens (as engine.sampler.apply_edit
    moves pins): before start unchanged, inside the span dropped, from end on moved by the delta."""
    delta = new_len - (end - start)
    out: dict[int, Any] = {}
    for p, v in d.items():
        if p < start:
            out[p] = v
        elif p >= end:
            out[p + delta] = v
    return out
