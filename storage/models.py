"""ORM tables (SQLAlchemy 2.0 declarative, typed Mapped[...] columns).

Glossary
  user        a person who logs in; role is one of ROLES; password_hash is Argon2id;
              must_change_password: every screen refuses until the user sets a new password
              (the first-run admin, users an admin added or whose password an admin reset)
  login_throttle  one row per account name or client address that tried to log in lately:
              key_hash is HMAC-SHA256(server secret "throttle", kind + name or address), so a
              submitted name that is no user is never stored; failures counts consecutive
              failures (an attempt counts from the moment it starts); last_slot_at the time the
              last attempt was allowed to check its password; locked_until ends a lock
  login_session   one logged-in browser session: token_hash is SHA-256 of the login cookie's
              token (never the token); any replica of the app accepts it until expires_at
  server_secret   random keys shared by the replicas of one database (the throttle's HMAC key,
              the login cookie's name); made on first use, never changed
  template    a report skeleton ({{slot:N}} marks N tokens to generate)
  document    one report; `version` is the optimistic-locking counter (bumped on every UPDATE)
  run         one generation of a document: model id + checksum, seed, sampler settings; a branch
              run has parent_run_id + parent_step_index and its steps continue from there
  step        one reverse-diffusion step of a run: token ids as little-endian int32 bytes and
              confidences as little-endian float16 bytes, n_tokens of each  # (L,) and (L,);
              kinds: one ASCII letter per position saying why it was held at that step (see
              storage.repository.run_state), layout: the run's positions number it was drawn in
  run state   the live state of a run (held positions and why, the step it continues from, the
              layouts after length-changing edits, a branch point), canonical JSON rewritten
              with every act and step, with a version counter; owner + lease_until say which
              app process is generating it and until when its lease holds
  pin         tokens [span_start, span_end) that the sampler must not change (kind token/term;
              kind edit: the tokens an edit put in). A pin row's span never changes: when an edit
              moves it, a new row (supersedes_pin_id = the old one, step_index = the edit's step)
              carries the new span, so a branch taken before the edit still sees the old span.
              removed_step_index: the step of its run at which it was unpinned (or moved)
  edit        a replacement of [span_start, span_end) by new_text; unit "token" (in a run's step)
              or "char" (in the document's text)
  review      approve / reject of a document version, with reason and an electronic signature
              (signature_meaning, signed_by, signed_at UTC, signature_method)
  export      one file written from the audit trail
  setting     one admin setting: key -> value as canonical JSON text (storage.repository.settings
              says which keys exist, their types and defaults); a key without a row has its default
  audit_event one row of the append-only hash chain (see storage/audit.py); audit_head holds the
              chain's last seq and hash so that cutting the tail is noticed too
Timestamps are UTC and come back timezone-aware on SQLite and PostgreSQL alike.
"""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    CheckConstraint,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship
from sqlalchemy.types import TypeDecorator

ROLES: tuple[str, ...] = ("operator", "reviewer", "manager", "admin")
DOCUMENT_STATUSES: tuple[str, ...] = ("draft", "awaiting_review", "approved", "rejected", "discarded")
RUN_STATUSES: tuple[str, ...] = ("running", "paused", "finished", "discarded")
REVIEW_DECISIONS: tuple[str, ...] = ("approve", "reject")
PIN_KINDS: tuple[str, ...] = ("token", "term", "edit")
EDIT_UNITS: tuple[str, ...] = ("token", "char")
EXPORT_FORMATS: tuple[str, ...] = ("csv", "xlsx", "parquet", "json")
THROTTLE_KINDS: tuple[str, ...] = ("account", "address")
GENESIS_HASH = "0" * 64

NAMING = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


def _in(column: str, values: tuple[str, ...]) -> str:
    return f"{column} IN ({', '.join(repr(v) for v in values)})"


class UTCDateTime(TypeDecorator[datetime]):
    """Aware UTC datetimes in, aware UTC datetimes out (SQLite stores them naive, in UTC)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime: storage keeps UTC, pass an aware datetime")
        value = value.astimezone(timezone.utc)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=timezone.utc) if value.tzinfo is None else value.astimezone(timezone.utc)


JSONValue = JSON().with_variant(JSONB(), "postgresql")


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)
    type_annotation_map = {datetime: UTCDateTime(), dict[str, Any]: JSONValue}


class User(Base):
    __tablename__ = "users"
    __table_args__ = (CheckConstraint(_in("role", ROLES), name="role"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(64), unique=True)
    role: Mapped[str] = mapped_column(String(16))
    password_hash: Mapped[str] = mapped_column(String(255))
    disabled: Mapped[bool] = mapped_column(Boolean, default=False)
    failed_logins: Mapped[int] = mapped_column(Integer, default=0)  # consecutive; reset on success
    last_failed_login_at: Mapped[datetime | None]
    last_login_at: Mapped[datetime | None]
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    must_change_password: Mapped[bool] = mapped_column(Boolean, default=False)

    def __repr__(self) -> str:
        return f"User({self.name!r}, role={self.role!r}, disabled={self.disabled})"


class Template(Base):
    __tablename__ = "templates"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(200), unique=True)
    body: Mapped[str] = mapped_column(Text)
    created_by_id: Mapped[int | None] = mapped_column(ForeignKey("users.id"))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class Document(Base):
    __tablename__ = "documents"
    __table_args__ = (CheckConstraint(_in("status", DOCUMENT_STATUSES), name="status"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    title: Mapped[str] = mapped_column(String(200))
    template_id: Mapped[int | None] = mapped_column(ForeignKey("templates.id"), index=True)
    text: Mapped[str] = mapped_column(Text, default="")
    status: Mapped[str] = mapped_column(String(24), default="draft", index=True)
    version: Mapped[int] = mapped_column(Integer)
    created_by_id: Mapped[int | None] = mapped_column(ForeignKey("users.id"))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_by_id: Mapped[int | None] = mapped_column(ForeignKey("users.id"))
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)

    template: Mapped[Template | None] = relationship()
    created_by: Mapped[User | None] = relationship(foreign_keys=[created_by_id])
    updated_by: Mapped[User | None] = relationship(foreign_keys=[updated_by_id])

    __mapper_args__ = {"version_id_col": version}


class Run(Base):
    __tablename__ = "runs"
    __table_args__ = (
        CheckConstraint(_in("status", RUN_STATUSES), name="status"),
        CheckConstraint("(parent_run_id IS NULL) = (parent_step_index IS NULL)", name="parent"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    document_id: Mapped[int] = mapped_column(ForeignKey("documents.id"), index=True)
    parent_run_id: Mapped[int | None] = mapped_column(ForeignKey("runs.id"), index=True)
    parent_step_index: Mapped[int | None] = mapped_column(Integer)
    model_id: Mapped[str] = mapped_column(String(200), index=True)
    model_checksum: Mapped[str] = mapped_column(String(128))
    seed: Mapped[int] = mapped_column(BigInteger)
    sampler_settings: Mapped[dict[str, Any]]
    status: Mapped[str] = mapped_column(String(16), default="running")
    started_by_id: Mapped[int | None] = mapped_column(ForeignKey("users.id"))
    started_at: Mapped[datetime] = mapped_column(default=utcnow)
    finished_at: Mapped[datetime | None]

    document: Mapped[Document] = relationship()
    parent_run: Mapped[Run | None] = relationship(remote_side=[id])


class Step(Base):
    __tablename__ = "steps"
    __table_args__ = (UniqueConstraint("run_id", "step_index", name="uq_steps_run_id_step_index"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    run_id: Mapped[int] = mapped_column(ForeignKey("runs.id"))
    step_index: Mapped[int] = mapped_column(Integer)  # global step index (a branch continues its parent's count)
    t: Mapped[float | None] = mapped_column(Float)  # diffusion time of this step, if the sampler has one
    n_tokens: Mapped[int] = mapped_column(Integer)  # L
    token_ids: Mapped[bytes] = mapped_column(LargeBinary)  # (L,) int32 little-endian
    confidences: Mapped[bytes] = mapped_column(LargeBinary)  # (L,) float16 little-endian
    kinds: Mapped[bytes | None] = mapped_column(LargeBinary)  # (L,) one ASCII letter each; None before 0004
    layout: Mapped[int | None] = mapped_column(Integer)  # None before 0004
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class RunState(Base):
    __tablename__ = "run_states"

    run_id: Mapped[int] = mapped_column(ForeignKey("runs.id"), primary_key=True)
    version: Mapped[int] = mapped_column(Integer)  # bumped by every write; a write expecting another is refused
    state: Mapped[str] = mapped_column(Text)  # canonical JSON (storage.repository.run_state)
    owner: Mapped[str | None] = mapped_column(String(128), index=True)  # the app process generating it
    lease_until: Mapped[datetime | None] = mapped_column(index=True)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)


class Pin(Base):
    __tablename__ = "pins"
    __table_args__ = (
        CheckConstraint(_in("kind", PIN_KINDS), name="kind"),
        CheckConstraint("span_start >= 0 AND span_end > span_start", name="span"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    document_id: Mapped[int] = mapped_column(ForeignKey("documents.id"), index=True)
    run_id: Mapped[int | None] = mapped_column(ForeignKey("runs.id"), index=True)
    step_index: Mapped[int | None] = mapped_column(Integer)
    span_start: Mapped[int] = mapped_column(Integer)
    span_end: Mapped[int] = mapped_column(Integer)
    text: Mapped[str] = mapped_column(Text)
    kind: Mapped[str] = mapped_column(String(8), default="token")
    reason: Mapped[str | None] = mapped_column(Text)
    created_by_id: Mapped[int] = mapped_column(ForeignKey("users.id"), index=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    removed_by_id: Mapped[int | None] = mapped_column(ForeignKey("users.id"))
    removed_at: Mapped[datetime | None]
    removed_reason: Mapped[str | None] = mapped_column(Text)
    removed_step_index: Mapped[int | None] = mapped_column(Integer)  # step of its run when unpinned / moved
    supersedes_pin_id: Mapped[int | None] = mapped_column(ForeignKey("pins.id"), index=True)  # moved from
    edit_id: Mapped[int | None] = mapped_column(ForeignKey("edits.id"))  # the edit that made / moved it

    created_by: Mapped[User] = relationship(foreign_keys=[created_by_id])


class Edit(Base):
    __tablename__ = "edits"
    __table_args__ = (
        CheckConstraint(_in("unit", EDIT_UNITS), name="unit"),
        CheckConstraint("span_start >= 0 AND span_end >= span_start", name="span"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    document_id: Mapped[int] = mapped_column(ForeignKey("documents.id"), index=True)
    run_id: Mapped[int | None] = mapped_column(ForeignKey("runs.id"), index=True)
    step_index: Mapped[int | None] = mapped_column(Integer)
    unit: Mapped[str] = mapped_column(String(8))
    span_start: Mapped[int] = mapped_column(Integer)
    span_end: Mapped[int] = mapped_column(Integer)
    old_text: Mapped[str] = mapped_column(Text)
    new_text: Mapped[str] = mapped_column(Text)
    new_n_tokens: Mapped[int | None] = mapped_column(Integer)  # token edits: len(new tokens); None before 0002
    reason: Mapped[str] = mapped_column(Text)
    created_by_id: Mapped[int] = mapped_column(ForeignKey("users.id"), index=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)

    created_by: Mapped[User] = relationship(foreign_keys=[created_by_id])


class Review(Base):
    __tablename__ = "reviews"
    __table_args__ = (CheckConstraint(_in("decision", REVIEW_DECISIONS), name="decision"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    document_id: Mapped[int] = mapped_column(ForeignKey("documents.id"), index=True)
    document_version: Mapped[int] = mapped_column(Integer)  # the version that was reviewed
    decision: Mapped[str] = mapped_column(String(8))
    reason: Mapped[str | None] = mapped_column(Text)  # the reviewer's own words
    reviewer_id: Mapped[int] = mapped_column(ForeignKey("users.id"))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    # the electronic signature (None only on reviews recorded before migration 0002)
    signature_meaning: Mapped[str | None] = mapped_column(Text)  # e.g. "approved as reviewed and correct"
    signed_by: Mapped[str | None] = mapped_column(String(64))  # the signer's user name
    signed_at: Mapped[datetime | None]
    signature_method: Mapped[str | None] = mapped_column(String(64))  # e.g. "password re-entry"


class Export(Base):
    __tablename__ = "exports"
    __table_args__ = (CheckConstraint(_in("format", EXPORT_FORMATS), name="format"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    actor_id: Mapped[int] = mapped_column(ForeignKey("users.id"))
    format: Mapped[str] = mapped_column(String(8))
    filters: Mapped[dict[str, Any]]
    row_count: Mapped[int] = mapped_column(Integer)
    path: Mapped[str] = mapped_column(Text)
    sha256: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class Setting(Base):
    __tablename__ = "settings"

    key: Mapped[str] = mapped_column(String(64), primary_key=True)
    value: Mapped[str] = mapped_column(Text)  # canonical JSON text, e.g. "true"
    updated_by_id: Mapped[int | None] = mapped_column(ForeignKey("users.id"))
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)


class LoginThrottle(Base):
    __tablename__ = "login_throttle"
    __table_args__ = (CheckConstraint(_in("kind", THROTTLE_KINDS), name="kind"),)

    key_hash: Mapped[str] = mapped_column(String(64), primary_key=True)  # HMAC-SHA256 hex
    kind: Mapped[str] = mapped_column(String(8))
    failures: Mapped[int] = mapped_column(Integer, default=0)  # consecutive, counted when an attempt starts
    last_slot_at: Mapped[datetime | None]  # when the last attempt could check its password
    locked_until: Mapped[datetime | None]
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, index=True)


class LoginSession(Base):
    __tablename__ = "login_sessions"

    token_hash: Mapped[str] = mapped_column(String(64), primary_key=True)  # SHA-256 hex of the cookie's token
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id"), index=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    expires_at: Mapped[datetime] = mapped_column(index=True)


class ServerSecret(Base):
    __tablename__ = "server_secrets"

    name: Mapped[str] = mapped_column(String(32), primary_key=True)
    secret: Mapped[str] = mapped_column(String(128))  # hex
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class AuditEvent(Base):
    """One link of the chain. Never updated or deleted (database triggers refuse it)."""

    __tablename__ = "audit_events"

    seq: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)  # 1, 2, 3, ...
    ts: Mapped[datetime] = mapped_column(index=True)
    actor: Mapped[str] = mapped_column(String(64), index=True)
    role: Mapped[str] = mapped_column(String(16))
    action: Mapped[str] = mapped_column(String(64), index=True)
    object_type: Mapped[str] = mapped_column(String(32))
    object_id: Mapped[str] = mapped_column(String(64))
    document_id: Mapped[int | None] = mapped_column(Integer, index=True)
    template_id: Mapped[int | None] = mapped_column(Integer, index=True)
    old_value: Mapped[str | None] = mapped_column(Text)  # canonical JSON text
    new_value: Mapped[str | None] = mapped_column(Text)  # canonical JSON text
    reason: Mapped[str | None] = mapped_column(Text)
    settings: Mapped[str | None] = mapped_column(Text)  # canonical JSON text
    prev_hash: Mapped[str] = mapped_column(String(64))
    hash: Mapped[str] = mapped_column(String(64), unique=True)


class AuditHead(Base):
    """A single row (id 1): the seq and hash of the chain's last event. Only ever moves forward."""

    __tablename__ = "audit_head"
    __table_args__ = (CheckConstraint("id = 1", name="single_row"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    seq: Mapped[int] = mapped_column(Integer)
    hash: Mapped[str] = mapped_column(String(64))


Index("ix_edits_created_at", Edit.created_at)
Index("ix_pins_created_at", Pin.created_at)
