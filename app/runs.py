"""The life cycle of the runs being drafted, on the server: start, stream, pause, go back, branch,
reload from the database; what a running generator reads between steps.

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
  live        while an earlier step is shown: (held, kinds, pin_rows, base, layout) of the last
              step, put back when the person returns to it
  layout      which positions the draft on screen has: a number that changes with every edit
              that changes the length. Every frame and view carries the layout it was drawn in,
              so a click on position p of an older view is moved to where that token is now
              (`map_position`), along the edits made since (`layout_parent`)
  refine      a complete draft that a person changed (pin, edit, lock) continues as a branch
              that re-runs the last REFINE_SHARE of the steps from the changed draft: positions
              near the changes and the least confident ones are written again, the rest is kept
  pace        the least seconds between two shown steps (the page's "watch" pace), so that a
              person can read and steer the draft; 0 shows steps as fast as they are computed
  stream      Generate and Resume are generators: one DraftUpdate per reverse-diffusion step,
              yielded as soon as the step is computed and recorded (storage.record_step)
Nothing here holds model tensors beyond the current step's small (L,) tensors.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import torch

from app import draft_view, run_store
from app.common import Refused, explain
from app.draft_view import DraftUpdate
from app.render import Frame
from app.run_store import frame_from_step, step_from_frame
from app.state import DraftState
from engine import sampler
from engine.commit import derive_committed
from engine.positions import shift_positions
from engine.sampler import Step
from storage import repository as repo
from storage.db import transaction
from storage.errors import StaleWrite

if TYPE_CHECKING:
    from sqlalchemy.orm import Session

    from app.auth import Actor
    from app.services import Services
    from engine.config import SamplerConfig

log = logging.getLogger("app.runs")

MAX_RUNS = 256  # run controls kept in memory (least recently used dropped; they reload from the database)
REFINE_SHARE = 0.25  # share of the steps a changed complete draft runs again
REFINE_NEAR = 8  # positions on either side of a change that are written again when refining


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
    live: tuple[Any, ...] | None = None  # (held, kinds, pin_rows, base, layout) of the last step while an earlier one is shown
    layout: int = 0  # the positions of `base` (see the glossary)
    layout_parent: dict[int, tuple[int, int, int, int]] = field(default_factory=dict)  # layout -> (parent, a, b, n)
    pace_s: float = 0.0  # least seconds between shown steps
    generation: int = 0  # bumped on every change of held / base: a step computed before is dropped
    version: int = 0  # of the run's stored state (app.run_store); 0: none stored yet
    model_id: str = ""  # the model version the run was started with (the default one if empty)
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

    @property
    def refining(self) -> bool:
        """A complete draft was changed: Resume refines it, Accept takes it as it is."""
        return self.branch_from is not None and self.branch_from >= self.total

    @property
    def complete(self) -> bool:
        """The last step is on screen and no change waits for a refinement."""
        return self.base is not None and self.base.index >= self.total and self.branch_from is None

    def live_frame(self) -> Frame:
        """(lock held) The state a pin / edit applies to: `base` with the current kinds."""
        assert self.base is not None
        base = self.base
        recorded = self.frames.get(base.index)
        elapsed = recorded.elapsed_ms if recorded is not None else None
        return frame_from_step(base, self.kinds_list(base.length), elapsed, self.layout)

    def map_position(self, pos: int, layout: int) -> int:
        """(lock held) Where the token at `pos` of a view drawn in `layout` is now; Refused when
        an edit replaced it or the view is of another branch of positions."""
        edits: list[tuple[int, int, int]] = []
        cur = self.layout
        while cur != layout:
            if cur not in self.layout_parent:
                raise Refused("the draft changed under your click (another step or branch is on screen now): "
                              "click the token again")
            cur, a, b, n = self.layout_parent[cur]
            edits.append((a, b, n))
        for a, b, n in reversed(edits):
            if a <= pos < b:
                raise Refused(f"the token you clicked (position {pos}) was replaced by an edit since")
            if pos >= b:
                pos += n - (b - a)
        return pos

    def open_complete(self) -> None:
        """(lock held) Let a person change a complete draft: Resume then refines it as a branch."""
        if self.complete:
            self.live = (dict(self.held), dict(self.kinds), dict(self.pin_rows), self.base, self.layout)
            self.branch_from = self.total
            self.view_step = self.total

    def go_back(self, index: int) -> None:
        """(lock held) Continue from recorded step `index` (not the last): its held positions and
        tokens become the base, the last step's are kept aside (`live`) until the person returns."""
        frame = self.frames[index]
        if self.branch_from is None:
            self.live = (dict(self.held), dict(self.kinds), dict(self.pin_rows), self.base, self.layout)
        self.kinds = {i: kd for i, kd in enumerate(frame.kinds) if kd}
        self.held = {i: frame.token_ids[i] for i in self.kinds}
        self.pin_rows = {p: i for p, i in self.pin_rows.items() if p in self.held}
        self.base = step_from_frame(frame, self.held)
        self.layout = frame.layout
        self.branch_from = index
        self.view_step = index
        self.changed_constraints()

    def restore_live(self) -> None:
        """(lock held) Back to the last recorded step and its held positions."""
        if self.live is not None:
            self.held, self.kinds, self.pin_rows, self.base, self.layout = self.live
            self.live = None
        self.branch_from = None
        self.view_step = self.last_index
        self.changed_constraints()

    def replace_span(self, start: int, end: int, released: set[int], new_len: int, step: Step,
                     held: dict[int, int]) -> None:
        """(lock held) After [start, end) was replaced by new_len tokens (engine.sampler.edit_step
        gave `step` and `held`): positions move by the engine's rule, the new span is an edit."""
        kinds = {p: k for p, k in self.kinds.items() if p not in released}
        kinds = shift_positions(kinds, start, end, new_len)
        kinds.update({start + i: "edit" for i in range(new_len)})
        self.kinds = kinds
        self.pin_rows = shift_positions(self.pin_rows, start, end, new_len)
        self.held = held
        self.base = step
        if new_len != end - start:
            new_layout = max([self.layout, *self.layout_parent]) + 1
            self.layout_parent[new_layout] = (self.layout, start, end, new_len)
            self.layout = new_layout
        self.changed_constraints()


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

    def streaming_ids(self) -> list[int]:
        with self._lock:
            return [run_id for run_id, ctrl in self._runs.items() if ctrl.streaming]

    def __len__(self) -> int:
        return len(self._runs)


def refine_start(step: Step, held: Mapping[int, int], steps: int) -> Step:
    """A complete draft that a person changed, as the step to refine it from: index and time
    moved back by `steps`, and only the share index / total of the free positions kept final, the
    positions near a change (step.changed) released first. The share is the constant schedule's
    whatever the run's commit_power, so that a refinement writes about `steps / total` of the
    draft again; the sampler commits nothing more until its own schedule passes that share."""
    L, total = step.length, step.total_steps
    idx = max(0, total - steps)
    held_mask = torch.zeros(L, dtype=torch.bool)  # (L,)
    for p in held:
        held_mask[p] = True
    near = step.changed.clone()  # (L,)
    for d in range(1, REFINE_NEAR + 1):
        near[d:] |= step.changed[:-d]
        near[:-d] |= step.changed[d:]
    conf = torch.where(near, torch.zeros(L), step.confidence)
    committed = derive_committed(conf, held_mask, idx, total)
    return dataclasses.replace(step, index=idx, t=sampler.time_grid(total)[idx], committed=committed)


# what a run recorded before a sampler field existed did without it: its value then
BEFORE_FIELD = {"commit_power": 1.0}


def sampler_config(svc: Services, settings: dict[str, Any]) -> SamplerConfig:
    """A run keeps the settings it was started with; fields it did not record are the model's,
    except those it predates (BEFORE_FIELD): a run recorded with `commit` but no `commit_power`
    committed a constant number of tokens a step and goes on doing so."""
    cfg = svc.ckpt.sampler_cfg
    old = {k: v for k, v in BEFORE_FIELD.items() if "commit" in settings and k not in settings}
    return dataclasses.replace(cfg, **old, **{f.name: settings[f.name] for f in dataclasses.fields(cfg) if f.name in settings})


def load_control(svc: Services, run_id: int) -> RunControl:
    """Rebuild a run's control from the database alone (after a restart, a crash, on another
    process, or when it fell out of the cache): app.run_store."""
    ctrl = RunControl(run_id=run_id, document_id=0, template_id=None, user="", settings={})
    with ctrl.lock:
        run_store.read_into(svc, ctrl)
    return ctrl


def control_for(svc: Services, state: DraftState | None) -> RunControl:
    """The control of the run on the session's screen. The cached one is checked against the
    database first: if another process changed the run since, it is read again."""
    if state is None or state.run_id is None:
        raise Refused("no draft on screen: generate one first")
    ctrl = svc.runs.get(state.run_id)
    if ctrl is None:
        ctrl = load_control(svc, state.run_id)
        svc.runs.put(ctrl)
        return svc.runs.get(state.run_id) or ctrl
    with ctrl.lock:
        with svc.reader() as s:
            version = repo.run_state_version(s, ctrl.run_id)
        if ctrl.version == -1 or (version is not None and version != ctrl.version):
            run_store.read_into(svc, ctrl)
    return ctrl


@contextmanager
def act(svc: Services, ctrl: RunControl, *, lease: bool = False) -> Iterator[Session]:
    """(ctrl.lock held) One transaction for an act on a run: the act's own rows (pins, edits,
    steps) and the run's new state (run_store.save, at the end of the block) land together or
    not at all. If the block or the commit fails, the control is read again from the database,
    so that nothing is held that was not stored."""
    try:
        with transaction(svc.factory) as s:
            yield s
            run_store.save(s, svc, ctrl, lease=lease)
    except BaseException:
        try:
            run_store.read_into(svc, ctrl)
        except Exception:  # noqa: BLE001 - the database is gone too: the next request reads it again
            ctrl.version = -1
        raise


def branch(svc: Services, actor: Actor, old: RunControl) -> RunControl:
    """(old.lock held) A new run continuing from old.branch_from with old's current held positions;
    old gets back the state of its last step. From the last step (a changed complete draft) the
    branch refines it: it runs the last REFINE_SHARE of the steps again from the changed draft,
    and its settings say so (refined_from_step)."""
    k = old.branch_from
    assert k is not None and old.base is not None
    settings, base = dict(old.settings), old.base
    settings.pop("refined_from_step", None)  # a branch of a refinement is not one itself unless it refines
    if old.refining:
        base = refine_start(old.base, old.held, max(1, round(old.total * REFINE_SHARE)))
        settings["refined_from_step"] = k
        k = base.index
    with act(svc, old) as s:  # the new run, its state and old's restored state land together
        ckpt, model_id = run_model(svc, old)
        run = repo.create_run(s, document_id=old.document_id, actor=actor.name, model_id=model_id,
                              model_checksum=ckpt.checksum, seed=int(old.settings["seed"]),
                              sampler_settings=settings, parent_run_id=old.run_id, parent_step_index=k)
        new = RunControl(run_id=run.id, document_id=old.document_id, template_id=old.template_id,
                         user=actor.name, settings=settings, held=dict(old.held), kinds=dict(old.kinds),
                         pin_rows=dict(old.pin_rows), frames={i: f for i, f in old.frames.items() if i <= k},
                         base=base, view_step=k, layout=old.layout, layout_parent=dict(old.layout_parent),
                         pace_s=old.pace_s, model_id=model_id)
        run_store.save(s, svc, new, lease=True)
        old.restore_live()
    svc.runs.put(new)
    return new


def run_model(svc: Services, ctrl: RunControl) -> tuple[Any, str]:
    """(checkpoint, model id) of the version the run was started with: a run goes on with its
    own model after another version was promoted. Refused if that version is gone."""
    model_id = ctrl.model_id or svc.model_id
    try:
        return svc.checkpoint_for(model_id), model_id
    except KeyError:
        raise Refused(f"run {ctrl.run_id} was drafted with model {model_id}, which this server no longer has: "
                      "start a new draft") from None


def step_iterator(svc: Services, ctrl: RunControl) -> Iterator[Step]:
    """(ctrl.lock held) The sampler's steps from the run's base (or from noise) with its held
    positions, by the run's own model version."""
    ckpt, model_id = run_model(svc, ctrl)
    run: dict[str, Any] = dict(pins=dict(ctrl.held), words=ckpt.words,
                               labels=[tid for p, tid in sorted(ctrl.held.items()) if ctrl.kinds.get(p) == "template"])
    if ctrl.base is None:
        run["length"] = int(ctrl.settings["length"])
    else:
        run["start"] = sampler.resume_from(ctrl.base, ctrl.base.tokens, ctrl.held)
    return sampler.sample(svc.denoiser_for(model_id), svc.models.diffusion(model_id),
                          sampler_config(svc, ctrl.settings), **run)


def stream(svc: Services, actor: Actor, ctrl: RunControl, state: DraftState,
           first_note: str = "") -> Iterator[DraftUpdate]:
    """Run the sampler from the run's base, recording and yielding every step, until the last step
    or a pause; pins and edits made meanwhile apply from the next step. The process holds the
    run's lease while it streams (renewed with every step, and by app.leases between steps); a
    stream that ends without a pause or the last step (the page closed, the event cancelled, an
    error) leaves the run paused, never "running" without a live owner."""
    # never yield while holding ctrl.lock: Gradio may resume the generator on another worker
    # thread (an RLock released there raises), and every pin / edit handler would wait meanwhile
    try:
        with ctrl.lock:
            if ctrl.streaming:
                raise Refused("this draft is already being generated")
            with act(svc, ctrl, lease=True) as s:  # a run stored before run states gets its state here
                if ctrl.version:
                    repo.claim_lease(s, ctrl.run_id, svc.instance, svc.lease_s)
            ctrl.streaming, ctrl.pause_requested, ctrl.done = True, False, False
    except Exception as exc:  # noqa: BLE001
        yield draft_view.error_update(explain(exc))
        return
    runs = draft_view.runs_of(svc, ctrl.document_id, ctrl.run_id)
    note = first_note
    try:
        it: Iterator[Step] | None = None
        seen = -1
        shown_at: float | None = None
        while True:
            # the pace is kept before a step is computed, not after: a pin or edit made while the
            # page shows a step is in the very next one, and no stale step is on its way meanwhile
            if shown_at is not None:
                wait = max(svc.step_delay_s, ctrl.pace_s - (time.perf_counter() - shown_at))
                if wait > 0:
                    time.sleep(wait)
            paused: DraftUpdate | None = None
            with ctrl.lock:
                if ctrl.pause_requested:
                    ctrl.pause_requested = False
                    with transaction(svc.factory) as s:
                        repo.set_run_status(s, ctrl.run_id, actor=actor.name, status="paused")
                        repo.release_lease(s, ctrl.run_id, svc.instance)
                    ctrl.streaming = False
                    up = draft_view.view(svc, ctrl, "paused")
                    paused = dataclasses.replace(up, message=f"Paused at step {up.step}. Click tokens to pin them, "
                                                 "edit a span or lock a term, then resume.", state=state,
                                                 runs=draft_view.runs_of(svc, ctrl.document_id, ctrl.run_id),
                                                 streaming=False, streamed=True)
                elif it is None or seen != ctrl.generation:
                    it = step_iterator(svc, ctrl)
                    seen = ctrl.generation
            if paused is not None:
                yield paused
                return
            assert it is not None
            t0 = time.perf_counter()
            step = next(it, None)
            if step is None:
                break
            compute_ms = (time.perf_counter() - t0) * 1000.0
            with ctrl.lock:
                if seen != ctrl.generation:
                    continue  # pins or tokens changed while this step was computed: compute it again with them
                try:
                    shown, frame, done = _record(svc, actor, ctrl, step, compute_ms)
                except StaleWrite:  # another process changed the run: go on from what it stored, if ours
                    _keep_lease(svc, ctrl)
                    continue
            text = svc.tokenizer.decode(frame.token_ids)
            msg = ("Draft complete: accept it, reject it with a reason, or go back to an earlier step."
                   if done else (note or "generating"))
            shown_at = time.perf_counter()
            yield DraftUpdate(message=msg, kind="ok" if done else "info", payload=shown, step=step.index,
                              total=ctrl.total, state=state, runs=draft_view.runs_of(svc, ctrl.document_id, ctrl.run_id)
                              if done else runs, streaming=not done, text=text, streamed=True)
            note = ""
            if done:
                return
    except Exception as exc:  # noqa: BLE001
        yield DraftUpdate(message=explain(exc), kind="error", state=state, streaming=False)
    finally:
        with ctrl.lock:
            ctrl.streaming = False
            ctrl.pause_requested = False
            _stop(svc, actor, ctrl)


def _record(svc: Services, actor: Actor, ctrl: RunControl, step: Step, compute_ms: float) -> tuple[Any, Frame, bool]:
    """(ctrl.lock held) Store a computed step with the run's new state (and the renewed lease) in
    one transaction; then it is the run's base. Returns (payload, frame, done)."""
    kinds = ctrl.kinds_list(step.length)
    frame = frame_from_step(step, kinds, compute_ms, ctrl.layout)
    with act(svc, ctrl, lease=True) as s:
        repo.record_step(s, ctrl.run_id, step.index, step.tokens.tolist(), step.confidence.tolist(), t=step.t,
                         kinds=kinds, layout=ctrl.layout)
        ctrl.frames[step.index] = frame
        ctrl.base = step
        ctrl.view_step = step.index
        done = step.done
        if done:
            ctrl.done = True
            repo.set_run_status(s, ctrl.run_id, actor=actor.name, status="paused",
                                reason="draft complete: awaiting accept, reject or discard")
    if done:
        ctrl.streaming = False
    return draft_view.payload(svc, ctrl, frame, "complete" if done else "generating"), frame, done


def _keep_lease(svc: Services, ctrl: RunControl) -> None:
    """(ctrl.lock held) After another process wrote the run (read again by `act`): carry on
    streaming only if this process still holds the lease; RunBusy if another one took it."""
    with transaction(svc.factory) as s:
        repo.claim_lease(s, ctrl.run_id, svc.instance, svc.lease_s)


def _stop(svc: Services, actor: Actor, ctrl: RunControl) -> None:
    """(ctrl.lock held) A stream ended: give the lease back; a run still "running" under this
    process's lease (the page closed, the event was cancelled, an error) is paused."""
    try:
        with transaction(svc.factory) as s:
            if repo.holds_lease(s, ctrl.run_id, svc.instance):
                if repo.get_run(s, ctrl.run_id).status == "running":
                    repo.set_run_status(s, ctrl.run_id, actor=actor.name, status="paused",
                                        reason="stopped: the page was closed or the stream was cancelled")
                repo.release_lease(s, ctrl.run_id, svc.instance)
    except Exception:  # noqa: BLE001 - the lease runs out by itself and app.leases pauses the run
        log.exception("could not release the lease of run %s", ctrl.run_id)
