"""The append-only, hash-chained audit trail: append, verify, filter, and its CLI.

Glossary
  seq        the event's place in the chain: 1, 2, 3, ... with no gaps
  canonical  the event as JSON with sorted keys, no spaces, UTF-8 (see canonical_json)
  hash       SHA-256 hex of the canonical JSON; it includes prev_hash, so each event seals the
             whole chain before it
  prev_hash  the previous event's hash ("0" * 64 for event 1)
  head       audit_head's single row: seq and hash of the last event; it only moves forward

Appends are serialised: on SQLite every write transaction starts with BEGIN IMMEDIATE (db.py),
on PostgreSQL append_event takes a transaction-scoped advisory lock. Triggers refuse UPDATE and
DELETE on audit_events (and anything but a one-step advance of audit_head).

    python -m storage.audit verify [--db-url URL]   # exit 0: intact; 1: broken, names the event
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, datetime, timezone
from decimal import Decimal
from enum import Enum
from pathlib import PurePath
from typing import Any
from uuid import UUID

from sqlalchemy import Select, select, text, update
from sqlalchemy.orm import Session

from storage import validate
from storage.errors import NotFound, StorageError, ValidationError
from storage.models import GENESIS_HASH, AuditEvent, AuditHead, Document, User, utcnow

AUDIT_LOCK_KEY = 0x0D1FFD7A  # pg_advisory_xact_lock key shared by every writer of the chain
TS_FORMAT = "%Y-%m-%dT%H:%M:%S.%fZ"
CHAIN_FIELDS: tuple[str, ...] = (
    "seq", "ts", "actor", "role", "action", "object_type", "object_id", "document_id",
    "template_id", "old_value", "new_value", "reason", "settings", "prev_hash",
)


# ---------------------------------------------------------------- canonical form


def _json_default(value: Any) -> Any:
    if isinstance(value, datetime):
        if value.tzinfo is None:
            raise ValidationError("naive datetime in an audit value: pass timezone-aware UTC times")
        return format_ts(value)
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, (UUID, PurePath, Decimal)):
        return str(value)
    if isinstance(value, Enum):
        return value.value
    if isinstance(value, (set, frozenset, tuple)):
        return sorted(value) if isinstance(value, (set, frozenset)) else list(value)
    if isinstance(value, bytes):
        return value.hex()
    raise ValidationError(f"cannot store a {type(value).__name__} in the audit trail: use JSON values")


def to_json_text(value: Any) -> str | None:
    """A value as canonical JSON text (sorted keys, no spaces, UTF-8 kept); None stays None."""
    if value is None:
        return None
    try:
        return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False,
                          allow_nan=False, default=_json_default)
    except ValueError as e:  # NaN / Infinity, circular references
        raise ValidationError(f"audit value is not valid JSON: {e}") from None


def from_json_text(value: str | None) -> Any:
    return None if value is None else json.loads(value)


def format_ts(ts: datetime) -> str:
    """UTC, microseconds, 'Z': 2025-01-31T09:05:00.000123Z."""
    return ts.astimezone(timezone.utc).strftime(TS_FORMAT)


def canonical_json(fields: dict[str, Any]) -> bytes:
    """The bytes that are hashed: exactly CHAIN_FIELDS, ts as format_ts, JSON values as their text."""
    doc = {k: fields[k] for k in CHAIN_FIELDS}
    if isinstance(doc["ts"], datetime):
        doc["ts"] = format_ts(doc["ts"])
    return json.dumps(doc, sort_keys=True, separators=(",", ":"), ensure_ascii=False,
                      allow_nan=False).encode("utf-8")


def event_hash(fields: dict[str, Any]) -> str:
    return hashlib.sha256(canonical_json(fields)).hexdigest()


def _fields(ev: AuditEvent | Any) -> dict[str, Any]:
    return {k: getattr(ev, k) for k in CHAIN_FIELDS}


# ---------------------------------------------------------------- append


def append_event(
    session: Session,
    actor: str,
    role: str,
    action: str,
    object_type: str,
    object_id: str | int,
    old: Any = None,
    new: Any = None,
    reason: str | None = None,
    settings: dict[str, Any] | None = None,
    *,
    document_id: int | None = None,
    template_id: int | None = None,
) -> AuditEvent:
    """Append one event inside the caller's transaction (it commits with the domain rows or not at all).

    actor must be an existing user whose role is `role`, or "system" with role "system".
    document_id / template_id are filled in from object_type/object_id and the document when omitted.
    """
    actor, role = _check_actor(session, actor, role)
    validate.ident(action, "action")
    validate.ident(object_type, "object type", 32)
    object_id = str(object_id)
    validate.text(object_id, "object id", max_chars=64)
    reason = validate.reason(reason, required=False)
    if object_type == "document" and document_id is None:
        document_id = _int_or_none(object_id)
    if object_type == "template" and template_id is None:
        template_id = _int_or_none(object_id)
    if document_id is not None and template_id is None:
        template_id = session.scalar(select(Document.template_id).where(Document.id == document_id))
    old_text, new_text, settings_text = to_json_text(old), to_json_text(new), to_json_text(settings)

    if session.get_bind().dialect.name == "postgresql":
        session.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": AUDIT_LOCK_KEY})
    head_seq, head_hash = session.execute(select(AuditHead.seq, AuditHead.hash).where(AuditHead.id == 1)).one()
    fields = dict(
        seq=head_seq + 1, ts=utcnow(), actor=actor, role=role, action=action, object_type=object_type,
        object_id=object_id, document_id=document_id, template_id=template_id, old_value=old_text,
        new_value=new_text, reason=reason, settings=settings_text, prev_hash=head_hash,
    )
    event = AuditEvent(**fields, hash=event_hash(fields))
    session.add(event)
    session.flush()
    moved = session.execute(
        update(AuditHead).where(AuditHead.id == 1, AuditHead.seq == head_seq).values(seq=event.seq, hash=event.hash)
    )
    if moved.rowcount != 1:  # cannot happen while appends are serialised; refuse rather than fork
        raise StorageError("the audit chain moved while appending; nothing was saved, try again")
    return event


def _int_or_none(value: str) -> int | None:
    try:
        return int(value)
    except ValueError:
        return None


def _check_actor(session: Session, actor: str, role: str) -> tuple[str, str]:
    if actor == validate.SYSTEM_ACTOR or role == validate.SYSTEM_ACTOR:
        if actor != role:
            raise ValidationError(f"the {validate.SYSTEM_ACTOR!r} actor and role go together (got {actor!r}, {role!r})")
        return actor, role
    validate.role(role)
    user_role = session.scalar(select(User.role).where(User.name == actor)) if isinstance(actor, str) else None
    if user_role is None:
        raise NotFound(f"unknown user {actor!r}")
    if user_role != role:
        raise ValidationError(f"user {actor!r} has role {user_role!r}, not {role!r}")
    return actor, role


# ---------------------------------------------------------------- verify


@dataclass(frozen=True)
class VerifyResult:
    ok: bool
    events: int  # events checked
    head_seq: int
    head_hash: str
    broken_seq: int | None = None  # the first event that breaks the chain
    message: str = ""


def verify_chain(session: Session, *, batch: int = 2_000) -> VerifyResult:
    """Walk the chain from event 1 and check seq, prev_hash, each hash and the head."""
    if session.get_bind().dialect.name == "postgresql" and not session.in_transaction():
        # one snapshot for the head and the events, so concurrent appends cannot confuse the walk
        session.connection(execution_options={"isolation_level": "REPEATABLE READ"})
    head = session.execute(select(AuditHead.seq, AuditHead.hash).where(AuditHead.id == 1)).one_or_none()
    if head is None:
        return VerifyResult(False, 0, 0, "", 1, "the chain head (audit_head row 1) is missing")
    head_seq, head_hash = head
    cols = [getattr(AuditEvent, k) for k in CHAIN_FIELDS] + [AuditEvent.hash]
    rows = session.execute(select(*cols).order_by(AuditEvent.seq).execution_options(yield_per=batch))
    prev_seq, prev_hash, count = 0, GENESIS_HASH, 0

    def broken(seq: int, message: str) -> VerifyResult:
        return VerifyResult(False, count, head_seq, head_hash, seq, message)

    for row in rows:
        ev = row._mapping
        seq = ev["seq"]
        if seq != prev_seq + 1:
            gone = f"event {prev_seq + 1} was" if seq == prev_seq + 2 else f"events {prev_seq + 1} to {seq - 1} were"
            return broken(prev_seq + 1, f"event {prev_seq + 1} is missing ({gone} removed; the next stored "
                                        f"event is {seq})")
        if event_hash(dict(ev)) != ev["hash"]:
            return broken(seq, f"event {seq} was changed: its content no longer matches its hash")
        if ev["prev_hash"] != prev_hash:
            return broken(seq, f"event {seq} does not follow event {seq - 1}: its prev_hash is not the hash "
                               f"of event {seq - 1} (one of the two was altered)")
        prev_seq, prev_hash, count = seq, ev["hash"], count + 1
    if prev_seq < head_seq:
        return broken(prev_seq + 1, f"event {prev_seq + 1} is missing: the head says the chain ends at event "
                                    f"{head_seq} but the last stored event is {prev_seq}")
    if prev_seq > head_seq:
        return broken(head_seq + 1, f"event {head_seq + 1} is not part of the chain: the head ends at event {head_seq}")
    if prev_hash != head_hash:
        return broken(head_seq, f"event {head_seq} does not match the hash recorded in the chain head")
    return VerifyResult(True, count, head_seq, head_hash, None, f"audit trail intact: {count} events, head {head_hash}")


# ---------------------------------------------------------------- filter


@dataclass(frozen=True)
class AuditFilter:
    """Filters for the UI table and exports. since is inclusive, until exclusive (aware UTC)."""

    user: str | None = None
    role: str | None = None
    action: str | None = None
    document_id: int | None = None
    template_id: int | None = None
    since: datetime | None = None
    until: datetime | None = None

    def as_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for k, v in self.__dict__.items():
            if v is not None:
                out[k] = format_ts(v) if isinstance(v, datetime) else v
        return out


def filtered(filters: AuditFilter | None) -> Select[tuple[AuditEvent]]:
    """select(AuditEvent) with the filters applied (unordered)."""
    f = filters or AuditFilter()
    if f.user is not None:
        validate.actor_name(f.user)
    if f.role is not None:
        validate.role(f.role)
    if f.action is not None:
        validate.ident(f.action, "the action")
    if f.document_id is not None:
        validate.row_id(f.document_id, "the document id")
    if f.template_id is not None:
        validate.row_id(f.template_id, "the template id")
    for t in (f.since, f.until):
        if t is not None and t.tzinfo is None:
            raise ValidationError("date filters must be timezone-aware (UTC)")
    if f.since and f.until and f.since >= f.until:
        raise ValidationError("the date range is empty: 'since' must come before 'until'")
    stmt = select(AuditEvent)
    if f.user is not None:
        stmt = stmt.where(AuditEvent.actor == f.user)
    if f.role is not None:
        stmt = stmt.where(AuditEvent.role == f.role)
    if f.action is not None:
        stmt = stmt.where(AuditEvent.action == f.action)
    if f.document_id is not None:
        stmt = stmt.where(AuditEvent.document_id == f.document_id)
    if f.template_id is not None:
        stmt = stmt.where(AuditEvent.template_id == f.template_id)
    if f.since is not None:
        stmt = stmt.where(AuditEvent.ts >= f.since)
    if f.until is not None:
        stmt = stmt.where(AuditEvent.ts < f.until)
    return stmt


def list_events(session: Session, filters: AuditFilter | None = None, *, limit: int = 200, offset: int = 0,
                newest_first: bool = True) -> list[AuditEvent]:
    """One page of events for the audit table."""
    order = AuditEvent.seq.desc() if newest_first else AuditEvent.seq.asc()
    return list(session.scalars(filtered(filters).order_by(order).limit(limit).offset(offset)))


# ---------------------------------------------------------------- CLI


def add_db_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--db-url", default=None,
                        help="database URL (sqlite:///FILE or postgresql+psycopg://USER@HOST/DB); "
                             "default: $DATABASE_URL, else the SQLite file in --data-dir")
    parser.add_argument("--data-dir", default=None,
                        help="folder of the default SQLite file (default: $DIFFDRAFT_DATA_DIR or ./data)")


def main(argv: Sequence[str] | None = None) -> int:
    from storage.db import make_engine, make_session_factory, read_only, resolve_url
    from storage.migrations import require_current

    from storage.cli import Parser, fail

    parser = Parser(prog="python -m storage.audit", description="Check the audit trail.")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("verify", help="walk the hash chain; exit 0 if intact, 1 naming the first broken event")
    add_db_args(p)
    args = parser.parse_args(argv)
    try:
        url = resolve_url(args.db_url, args.data_dir)
        engine = make_engine(url)
        try:
            require_current(engine)
            with make_session_factory(read_only(engine))() as session:
                result = verify_chain(session)
        finally:
            engine.dispose()
    except StorageError as e:
        return fail(str(e))
    if result.ok:
        print(result.message)
        return 0
    print(f"audit trail BROKEN at event {result.broken_seq}: {result.message}", file=sys.stderr)
    return 1


if __name__ == "__main__":
    sys.exit(main())
