"""Generation runs and their recorded steps, including the lineage of branches.

Part of storage.repository (see its docstring for the glossary); Session first, never commits.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from storage import validate
from storage.audit import append_event, to_json_text
from storage.errors import NotFound, ValidationError
from storage.models import RUN_STATUSES, Document, Run, Step, User, utcnow
from storage.repository.roles import ActorRef, _who, require
from storage.repository.documents import get_document
from storage.repository.run_state import decode_kinds, encode_kinds


@dataclass(frozen=True)
class StepData:
    """One decoded step: token ids and confidences are plain lists of length n_tokens (L)."""

    run_id: int
    step_index: int
    t: float | None
    token_ids: list[int]  # (L,)
    confidences: list[float]  # (L,)
    created_at: datetime
    kinds: list[str] | None = None  # (L,) why each position was held then; None for steps stored before 0004
    layout: int | None = None

    @property
    def n_tokens(self) -> int:
        return len(self.token_ids)


def encode_token_ids(token_ids: Iterable[int]) -> bytes:
    values = _as_list(token_ids)
    try:
        return struct.pack(f"<{len(values)}i", *values)
    except struct.error as e:
        raise ValidationError(f"token ids must be whole numbers that fit in int32 ({e})") from None


def encode_confidences(confidences: Iterable[float]) -> bytes:
    values = [float(v) for v in _as_list(confidences)]
    if any(not (0.0 <= v <= 1.0) for v in values):  # also refuses NaN
        raise ValidationError("confidences must lie between 0 and 1")
    return struct.pack(f"<{len(values)}e", *values)


def decode_token_ids(data: bytes) -> list[int]:
    return list(struct.unpack(f"<{len(data) // 4}i", data))


def decode_confidences(data: bytes) -> list[float]:
    return list(struct.unpack(f"<{len(data) // 2}e", data))


def _as_list(values: Iterable[Any]) -> list[Any]:
    tolist = getattr(values, "tolist", None)  # numpy arrays and torch tensors
    out = tolist() if callable(tolist) else list(values)
    if not isinstance(out, list):
        raise ValidationError("expected a one-dimensional sequence")
    return out


def _step_data(step: Step) -> StepData:
    return StepData(step.run_id, step.step_index, step.t, decode_token_ids(step.token_ids),
                    decode_confidences(step.confidences), step.created_at, decode_kinds(step.kinds), step.layout)


def _run_settings(run: Run, step_index: int | None = None) -> dict[str, Any]:
    out: dict[str, Any] = {"run_id": run.id, "model_id": run.model_id, "model_checksum": run.model_checksum,
                           "seed": run.seed, "sampler": run.sampler_settings}
    if step_index is not None:
        out["step_index"] = step_index
    return out


def create_run(session: Session, *, document_id: int, actor: ActorRef, model_id: str, model_checksum: str,
               seed: int, sampler_settings: dict[str, Any], parent_run_id: int | None = None,
               parent_step_index: int | None = None) -> Run:
    """A new generation run; with parent_run_id + parent_step_index it is a branch that continues
    from that step (the parent run and its later steps are kept)."""
    by = require(session, actor, "run.create")
    doc = get_document(session, document_id)
    if doc.status in ("approved", "discarded"):
        raise ValidationError(f"document {doc.id} is {doc.status}: start a new document instead")
    validate.text(model_id, "model id", max_chars=200)
    validate.text(model_checksum, "model checksum", max_chars=128)
    if not isinstance(seed, int) or isinstance(seed, bool) or not (-(2**63) <= seed < 2**63):
        raise ValidationError("the seed must be a whole number that fits in 64 bits")
    if not isinstance(sampler_settings, dict):
        raise ValidationError("sampler settings must be a JSON object")
    to_json_text(sampler_settings)  # refuses values JSON cannot hold
    if (parent_run_id is None) != (parent_step_index is None):
        raise ValidationError("a branch needs both parent_run_id and parent_step_index")
    if parent_run_id is not None:
        parent = get_run(session, parent_run_id)
        if parent.document_id != document_id:
            raise ValidationError(f"run {parent_run_id} belongs to document {parent.document_id}, not {document_id}")
        get_step(session, parent_run_id, parent_step_index)  # type: ignore[arg-type]
    run = Run(document_id=document_id, parent_run_id=parent_run_id, parent_step_index=parent_step_index,
              model_id=model_id, model_checksum=model_checksum, seed=seed, sampler_settings=sampler_settings,
              status="running", started_by_id=by.id)
    session.add(run)
    session.flush()
    append_event(session, *_who(by), "run.start", "run", run.id, document_id=document_id,
                 new={"model_id": model_id, "model_checksum": model_checksum, "seed": seed,
                      "parent_run_id": parent_run_id, "parent_step_index": parent_step_index},
                 settings=_run_settings(run))
    return run


def get_run(session: Session, run_id: int) -> Run:
    run = session.get(Run, run_id)
    if run is None:
        raise NotFound(f"no run {run_id}")
    return run


def list_runs(session: Session, document_id: int) -> list[Run]:
    return list(session.scalars(select(Run).where(Run.document_id == document_id).order_by(Run.id)))


def last_open_run(session: Session, user_name: str) -> Run | None:
    """The latest run that `user_name` started and that is still open (running or paused) on a
    document that is still a draft: the draft a person comes back to after a restart or a new login."""
    return session.scalar(
        select(Run).join(User, Run.started_by_id == User.id).join(Document, Run.document_id == Document.id)
        .where(User.name == user_name, Run.status.in_(("running", "paused")), Document.status == "draft")
        .order_by(Run.id.desc()).limit(1))


def set_run_status(session: Session, run_id: int, *, actor: ActorRef, status: str,
                   reason: str | None = None) -> Run:
    """running <-> paused, then finished or discarded (final)."""
    by = require(session, actor, "run.status")
    reason = validate.reason(reason, required=False)
    if status not in RUN_STATUSES:
        raise ValidationError(f"unknown run status {status!r}: choose one of {', '.join(RUN_STATUSES)}")
    run = get_run(session, run_id)
    if run.status in ("finished", "discarded"):
        raise ValidationError(f"run {run_id} is already {run.status}")
    old = run.status
    run.status = status
    if status in ("finished", "discarded"):
        run.finished_at = utcnow()
    session.flush()
    append_event(session, *_who(by), f"run.{status}", "run", run.id, document_id=run.document_id,
                 old={"status": old}, new={"status": status}, reason=reason, settings=_run_settings(run))
    return run


def _next_step_index(session: Session, run: Run) -> int:
    last = session.scalar(select(func.max(Step.step_index)).where(Step.run_id == run.id))
    if last is not None:
        return last + 1
    return 0 if run.parent_step_index is None else run.parent_step_index + 1


def record_step(session: Session, run_id: int, step_index: int, token_ids: Sequence[int] | Any,
                confidences: Sequence[float] | Any, *, t: float | None = None, kinds: Sequence[str] | None = None,
                layout: int | None = None) -> Step:
    """Store one step compactly. Steps come in order: step_index must be the run's next index
    (0, or parent_step_index + 1 for a branch). Steps are machine output and not audited.
    kinds: why each position was held at this step ("", "template", "pin", "term", "edit");
    layout: the run's positions number the step was drawn in (see storage.repository.run_state)."""
    run = get_run(session, run_id)
    if run.status in ("finished", "discarded"):
        raise ValidationError(f"run {run_id} is {run.status}: start a branch to continue it")
    expected = _next_step_index(session, run)
    if step_index != expected:
        raise ValidationError(f"step {step_index} of run {run_id} is out of order: the next step is {expected}")
    ids, conf = encode_token_ids(token_ids), encode_confidences(confidences)
    if len(ids) // 4 != len(conf) // 2:
        raise ValidationError(f"{len(ids) // 4} token ids but {len(conf) // 2} confidences: they must match")
    kind_bytes = encode_kinds(kinds) if kinds is not None else None
    if kind_bytes is not None and len(kind_bytes) != len(ids) // 4:
        raise ValidationError(f"{len(ids) // 4} token ids but {len(kind_bytes)} kinds: they must match")
    step = Step(run_id=run_id, step_index=step_index, t=t, n_tokens=len(ids) // 4, token_ids=ids, confidences=conf,
                kinds=kind_bytes, layout=layout)
    session.add(step)
    session.flush()
    return step


def _lineage(session: Session, run: Run) -> list[tuple[Run, int | None]]:
    """[(run, last step index taken from it or None for all)], root first."""
    out: list[tuple[Run, int | None]] = []
    limit: int | None = None
    current: Run | None = run
    while current is not None:
        out.append((current, limit))
        if current.parent_step_index is not None:  # a branch of a branch may start before its parent did
            limit = current.parent_step_index if limit is None else min(limit, current.parent_step_index)
        current = get_run(session, current.parent_run_id) if current.parent_run_id is not None else None
    return out[::-1]


def get_step(session: Session, run_id: int, step_index: int) -> StepData:
    """Step `step_index` as seen from run `run_id` (earlier steps of a branch live in its parent)."""
    run = get_run(session, run_id)
    while run.parent_step_index is not None and step_index <= run.parent_step_index:
        run = get_run(session, run.parent_run_id)  # type: ignore[arg-type]
    step = session.scalar(select(Step).where(Step.run_id == run.id, Step.step_index == step_index))
    if step is None:
        raise NotFound(f"run {run_id} has no step {step_index}")
    return _step_data(step)


def list_steps(session: Session, run_id: int) -> list[StepData]:
    """Every step of the run from step 0, following parent runs: enough to replay or resume."""
    out: list[StepData] = []
    for run, limit in _lineage(session, get_run(session, run_id)):
        stmt = select(Step).where(Step.run_id == run.id).order_by(Step.step_index)
        if limit is not None:
            stmt = stmt.where(Step.step_index <= limit)
        out.extend(_step_data(s) for s in session.scalars(stmt))
    return out


def last_step(session: Session, run_id: int) -> StepData | None:
    run = get_run(session, run_id)
    last = session.scalar(select(func.max(Step.step_index)).where(Step.run_id == run.id))
    if last is None:
        return get_step(session, run.parent_run_id, run.parent_step_index) if run.parent_run_id is not None else None
    return get_step(session, run_id, last)
