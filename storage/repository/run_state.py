"""The live state of a run, kept in the database so that any app process can rebuild the run at
any step: after a crash, after a restart, on another replica, or after the run fell out of a
process's cache. And the lease that says which process is generating a run.

Part of storage.repository (see its docstring for the glossary); Session first, never commits.

Glossary
  state       a JSON object the app writes with every act and every step of the run, in the same
              transaction as the act's own rows (pins, edits, steps), so that the two never
              disagree. Storage keeps it as canonical JSON and does not read inside it.
  version     bumped by every write. A write names the version it read; if another process wrote
              in between, the write is refused (StaleWrite) and changes nothing
  owner       the app process generating the run now (its instance id), or None
  lease       the owner's claim holds until lease_until; the owner renews it while it generates.
              A run whose status is "running" and whose lease ran out (its process died) is
              interrupted: `pause_interrupted` pauses it so that its owner can resume it anywhere
  kinds       why each position of a recorded step was held then, one ASCII letter each
              (KIND_CODES), stored with the step (steps.kinds)
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import or_, select, update
from sqlalchemy.orm import Session

from storage.audit import append_event, from_json_text, to_json_text
from storage.errors import RunBusy, StaleWrite, ValidationError
from storage.models import Run, RunState, utcnow
from storage.validate import SYSTEM_ACTOR

KIND_CODES: dict[str, str] = {"": ".", "template": "T", "pin": "P", "term": "L", "edit": "E"}
_KIND_OF_CODE = {c: k for k, c in KIND_CODES.items()}
MAX_STATE_CHARS = 8_000_000


@dataclass(frozen=True)
class RunStateData:
    run_id: int
    version: int
    state: dict[str, Any]
    owner: str | None
    lease_until: datetime | None
    updated_at: datetime


def encode_kinds(kinds: Sequence[str]) -> bytes:
    try:
        return "".join(KIND_CODES[k] for k in kinds).encode("ascii")
    except KeyError as e:
        raise ValidationError(f"unknown kind of held position {e.args[0]!r}: choose one of "
                              f"{', '.join(repr(k) for k in KIND_CODES)}") from None


def decode_kinds(data: bytes | None) -> list[str] | None:
    return None if data is None else [_KIND_OF_CODE.get(chr(b), "") for b in data]


def _data(row: RunState) -> RunStateData:
    return RunStateData(row.run_id, row.version, from_json_text(row.state), row.owner, row.lease_until,
                        row.updated_at)


def get_run_state(session: Session, run_id: int) -> RunStateData | None:
    row = session.get(RunState, run_id, populate_existing=True)
    return _data(row) if row is not None else None


def run_state_version(session: Session, run_id: int) -> int | None:
    """The version only (a cheap check whether a cached state is still current)."""
    return session.scalar(select(RunState.version).where(RunState.run_id == run_id))


def save_run_state(session: Session, run_id: int, state: dict[str, Any], *, expected_version: int | None,
                   owner: str | None = None, lease_s: float | None = None) -> int:
    """Write the run's state and return its new version. expected_version is the version the
    caller's copy was read at (None: the run has no state yet). With owner and lease_s the write
    also claims or renews the lease, and is refused (StaleWrite) while another owner's lease holds."""
    if not isinstance(state, dict):
        raise ValidationError("a run state must be a JSON object")
    text = to_json_text(state)
    assert text is not None
    if len(text) > MAX_STATE_CHARS:
        raise ValidationError(f"the run state is {len(text):,} characters; at most {MAX_STATE_CHARS:,} are kept")
    now = utcnow()
    lease = {"owner": owner, "lease_until": now + timedelta(seconds=lease_s)} if owner and lease_s else {}
    if expected_version is None:
        if session.get(RunState, run_id) is not None:
            raise _stale(session, run_id, 0)
        session.add(RunState(run_id=run_id, version=1, state=text, updated_at=now, **lease))
        session.flush()
        return 1
    where = [RunState.run_id == run_id, RunState.version == expected_version]
    if lease:  # never take over a live lease of another process
        where.append(or_(RunState.owner.is_(None), RunState.owner == owner, RunState.lease_until.is_(None),
                         RunState.lease_until < now))
    result = session.execute(
        update(RunState).where(*where)
        .values(version=expected_version + 1, state=text, updated_at=now, **lease)
        .execution_options(synchronize_session=False))
    if result.rowcount != 1:  # type: ignore[attr-defined]
        raise _stale(session, run_id, expected_version)
    return expected_version + 1


def _stale(session: Session, run_id: int, expected: int) -> StaleWrite:
    row = session.get(RunState, run_id, populate_existing=True)
    return StaleWrite(f"run {run_id}", expected, row.version if row is not None else 0,
                      row.owner if row is not None else None, row.updated_at if row is not None else None)


def claim_lease(session: Session, run_id: int, owner: str, lease_s: float) -> None:
    """Take (or renew) the lease of a run for `owner`; RunBusy while another owner's lease holds."""
    now = utcnow()
    result = session.execute(
        update(RunState).where(RunState.run_id == run_id,
                               or_(RunState.owner.is_(None), RunState.owner == owner,
                                   RunState.lease_until.is_(None), RunState.lease_until < now))
        .values(owner=owner, lease_until=now + timedelta(seconds=lease_s))
        .execution_options(synchronize_session=False))
    if result.rowcount == 1:  # type: ignore[attr-defined]
        return
    row = session.get(RunState, run_id, populate_existing=True)
    if row is None:
        raise ValidationError(f"run {run_id} has no stored state (it was started by an older version): "
                              "start a branch from one of its steps instead")
    left = (row.lease_until - now).total_seconds() if row.lease_until is not None else 0.0
    raise RunBusy(f"run {run_id} is being generated by another app process; if that process stopped, "
                  f"it can be resumed in {max(1, round(left))} s")


def renew_leases(session: Session, owner: str, run_ids: Sequence[int], lease_s: float) -> int:
    """Extend `owner`'s leases of these runs; returns how many it still held."""
    if not run_ids:
        return 0
    result = session.execute(
        update(RunState).where(RunState.run_id.in_(list(run_ids)), RunState.owner == owner)
        .values(lease_until=utcnow() + timedelta(seconds=lease_s))
        .execution_options(synchronize_session=False))
    return int(result.rowcount)  # type: ignore[attr-defined]


def release_lease(session: Session, run_id: int, owner: str) -> None:
    session.execute(update(RunState).where(RunState.run_id == run_id, RunState.owner == owner)
                    .values(owner=None, lease_until=None).execution_options(synchronize_session=False))


def holds_lease(session: Session, run_id: int, owner: str) -> bool:
    row = session.get(RunState, run_id, populate_existing=True)
    return row is not None and row.owner == owner and row.lease_until is not None and row.lease_until >= utcnow()


def pause_interrupted(session: Session, *, grace_s: float = 0.0) -> list[int]:
    """Pause every run that is "running" with no live lease (its process died, or it was started
    by a version without leases and `grace_s` has passed since); audited as run.paused by the
    system with the reason. Returns the run ids."""
    now = utcnow()
    live = select(RunState.run_id).where(RunState.owner.is_not(None), RunState.lease_until >= now)
    runs = list(session.scalars(select(Run).where(Run.status == "running", Run.id.not_in(live),
                                                  Run.started_at < now - timedelta(seconds=grace_s))
                                .order_by(Run.id).with_for_update()))
    for run in runs:
        run.status = "paused"
        session.execute(update(RunState).where(RunState.run_id == run.id).values(owner=None, lease_until=None)
                        .execution_options(synchronize_session=False))
        session.flush()
        append_event(session, SYSTEM_ACTOR, SYSTEM_ACTOR, "run.paused", "run", run.id, document_id=run.document_id,
                     old={"status": "running"}, new={"status": "paused"},
                     reason="interrupted: the app process generating it stopped; its owner can resume it")
    return [r.id for r in runs]
