"""Typed functions over the tables. Each takes the caller's Session first, uses select(), and
never commits: the caller commits, so a domain row and its audit event land together or not at all.

Glossary
  actor       the user doing it: a User or a user name; "system" is the CLIs' and start-up code's
              identity (never a login) and may only manage users and templates and read
  permission  what an act needs ("pin", "review", ...); PERMISSIONS says which roles have it
  expected_version  the document version the person saw; a write to any other version is refused
              with StaleWrite(who, when) and changes nothing
  span        [span_start, span_end): token positions in a run's step, or character positions in a
              document's text (edit unit "char")
  step bytes  token ids as little-endian int32, confidences as little-endian float16  # (L,) each
Errors: NotFound, ValidationError, PermissionDenied, StaleWrite (all StorageError).
"""

from __future__ import annotations

import struct
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from sqlalchemy import and_, func, or_, select
from sqlalchemy.orm import Session

from storage import validate
from storage.audit import append_event, to_json_text
from storage.errors import NotFound, PermissionDenied, StaleWrite, StorageError, ValidationError
from storage.models import (
    DOCUMENT_STATUSES,
    REVIEW_DECISIONS,
    ROLES,
    RUN_STATUSES,
    Document,
    Edit,
    Pin,
    Review,
    Run,
    Step,
    Template,
    User,
    utcnow,
)
from storage.validate import SYSTEM_ACTOR

__all__ = [
    "StorageError", "NotFound", "ValidationError", "PermissionDenied", "StaleWrite", "PERMISSIONS",
    "can", "require", "hash_password", "verify_password", "set_password_hasher", "create_user", "get_user",
    "find_user", "list_users", "set_role", "disable_user", "enable_user", "set_password", "authenticate",
    "create_template", "get_template", "get_template_by_name", "list_templates", "create_document",
    "get_document", "list_documents", "documents_awaiting_review", "update_document", "create_run", "get_run",
    "list_runs", "set_run_status", "record_step", "get_step", "list_steps", "last_step", "StepData",
    "add_pin", "add_term_pins", "remove_pin", "active_pins", "record_edit", "list_edits", "record_review",
    "list_reviews", "feedback_counts", "FeedbackCount", "edit_pairs", "EditPair",
]

ActorRef = User | str

# ---------------------------------------------------------------- roles

_DRAFTING = frozenset({"document.create", "document.update", "run.create", "run.step", "run.status"})
PERMISSIONS: dict[str, frozenset[str]] = {
    "operator": _DRAFTING,
    "reviewer": _DRAFTING | {"pin", "edit", "review"},
    "manager": frozenset({"template.create", "audit.read", "export", "feedback.read"}),
    "admin": _DRAFTING | {"pin", "edit", "review", "template.create", "audit.read", "export", "feedback.read",
                          "user.manage"},
}
_SYSTEM_PERMISSIONS = frozenset({"user.manage", "template.create", "audit.read", "feedback.read"})
_WHAT = {
    "document.create": "create documents", "document.update": "change documents", "run.create": "start runs",
    "run.step": "record steps", "run.status": "pause, finish or discard runs", "pin": "pin tokens",
    "edit": "edit drafts", "review": "approve or reject drafts", "template.create": "create templates",
    "audit.read": "read the audit trail", "export": "export the audit trail", "feedback.read": "read QA feedback",
    "user.manage": "manage users",
}


def can(role: str, permission: str) -> bool:
    """Whether `role` has `permission` (see PERMISSIONS)."""
    if role == SYSTEM_ACTOR:
        return permission in _SYSTEM_PERMISSIONS
    return permission in PERMISSIONS.get(role, frozenset())


def require(session: Session, actor: ActorRef, permission: str) -> User | None:
    """The acting user (None for "system"), or NotFound / PermissionDenied with a clear message."""
    name = actor.name if isinstance(actor, User) else actor
    if name == SYSTEM_ACTOR:
        if not can(SYSTEM_ACTOR, permission):
            raise PermissionDenied(f"the system actor may not {_WHAT.get(permission, permission)}: act as a user")
        return None
    user = session.scalar(select(User).where(User.name == name))
    if user is None:
        raise NotFound(f"unknown user {name!r}")
    if user.disabled:
        raise PermissionDenied(f"user {name!r} is disabled")
    if not can(user.role, permission):
        roles = [r for r in ROLES if can(r, permission)]
        raise PermissionDenied(
            f"{name} is a {user.role} and may not {_WHAT.get(permission, permission)} (needs role {' or '.join(roles)})"
        )
    return user


def _who(user: User | None) -> tuple[str, str]:
    return (user.name, user.role) if user is not None else (SYSTEM_ACTOR, SYSTEM_ACTOR)


# ---------------------------------------------------------------- users and passwords

_hasher = PasswordHasher()  # Argon2id with argon2-cffi's defaults (RFC 9106 low-memory profile)
_DUMMY_HASH: str | None = None


def set_password_hasher(hasher: PasswordHasher) -> None:
    """Replace the hasher (tests use cheap parameters; production keeps the defaults)."""
    global _hasher, _DUMMY_HASH
    _hasher, _DUMMY_HASH = hasher, None


def hash_password(password: str) -> str:
    return _hasher.hash(validate.password(password))


def verify_password(password_hash: str, password: str) -> bool:
    try:
        return _hasher.verify(password_hash, password)
    except (VerificationError, InvalidHashError):
        return False


def create_user(session: Session, name: str, role: str, password: str, *, actor: ActorRef = SYSTEM_ACTOR,
                reason: str | None = None) -> User:
    """A new enabled user with an Argon2id password hash."""
    by = require(session, actor, "user.manage")
    validate.user_name(name)
    validate.role(role)
    reason = validate.reason(reason, required=False)
    if find_user(session, name) is not None:
        raise ValidationError(f"user {name!r} already exists")
    user = User(name=name, role=role, password_hash=hash_password(password), disabled=False, failed_logins=0)
    session.add(user)
    session.flush()
    append_event(session, *_who(by), "user.create", "user", name, new={"name": name, "role": role}, reason=reason)
    return user


def find_user(session: Session, name: str) -> User | None:
    return session.scalar(select(User).where(User.name == name))


def get_user(session: Session, name: str) -> User:
    user = find_user(session, name)
    if user is None:
        raise NotFound(f"unknown user {name!r}")
    return user


def list_users(session: Session, *, include_disabled: bool = True) -> list[User]:
    stmt = select(User).order_by(User.name)
    if not include_disabled:
        stmt = stmt.where(User.disabled.is_(False))
    return list(session.scalars(stmt))


def set_role(session: Session, name: str, role: str, *, actor: ActorRef, reason: str) -> User:
    by = require(session, actor, "user.manage")
    validate.role(role)
    reason = validate.reason(reason, required=True)
    user = get_user(session, name)
    if user.role == role:
        raise ValidationError(f"user {name!r} already has role {role!r}")
    old = user.role
    user.role = role
    session.flush()
    append_event(session, *_who(by), "user.set_role", "user", name, old={"role": old}, new={"role": role}, reason=reason)
    return user


def disable_user(session: Session, name: str, *, actor: ActorRef, reason: str) -> User:
    return _set_disabled(session, name, True, actor, reason)


def enable_user(session: Session, name: str, *, actor: ActorRef, reason: str) -> User:
    return _set_disabled(session, name, False, actor, reason)


def _set_disabled(session: Session, name: str, disabled: bool, actor: ActorRef, reason: str) -> User:
    by = require(session, actor, "user.manage")
    reason = validate.reason(reason, required=True)
    user = get_user(session, name)
    if by is not None and by.id == user.id and disabled:
        raise ValidationError("you cannot disable yourself")
    if user.disabled == disabled:
        raise ValidationError(f"user {name!r} is already {'disabled' if disabled else 'enabled'}")
    user.disabled = disabled
    session.flush()
    action = "user.disable" if disabled else "user.enable"
    append_event(session, *_who(by), action, "user", name, old={"disabled": not disabled},
                 new={"disabled": disabled}, reason=reason)
    return user


def set_password(session: Session, name: str, password: str, *, actor: ActorRef, reason: str | None = None) -> User:
    """Admins (or "system") set anyone's password; a user may set their own."""
    acting_name = actor.name if isinstance(actor, User) else actor
    by = require(session, actor, "user.manage") if acting_name != name else get_user(session, name)
    user = get_user(session, name)
    user.password_hash = hash_password(password)
    user.failed_logins = 0
    session.flush()
    append_event(session, *_who(by), "user.set_password", "user", name, reason=validate.reason(reason, required=False))
    return user


def authenticate(session: Session, name: str, password: str) -> User | None:
    """The enabled user whose Argon2id hash matches, else None. Commit afterwards either way:
    failures are counted (users.failed_logins, reset on success) and every attempt is audited."""
    global _DUMMY_HASH
    user = find_user(session, name) if isinstance(name, str) and name else None
    if not isinstance(password, str):
        password = ""
    if user is None or user.disabled:
        if _DUMMY_HASH is None:
            _DUMMY_HASH = _hasher.hash("not a password, only equalises timing")
        verify_password(_DUMMY_HASH, password)  # same cost as a real check: no user-name oracle
        if user is None:
            attempted = str(name or "").replace("\x00", "")[:64].strip() or "(empty)"
            append_event(session, SYSTEM_ACTOR, SYSTEM_ACTOR, "login.failed", "user", attempted,
                         new={"why": "unknown user"})
        else:
            append_event(session, user.name, user.role, "login.failed", "user", user.name, new={"why": "disabled"})
        return None
    now = utcnow()
    if not verify_password(user.password_hash, password):
        user.failed_logins += 1
        user.last_failed_login_at = now
        session.flush()
        append_event(session, user.name, user.role, "login.failed", "user", user.name,
                     new={"why": "wrong password", "failed_logins": user.failed_logins})
        return None
    if _hasher.check_needs_rehash(user.password_hash):
        user.password_hash = _hasher.hash(password)
    user.failed_logins = 0
    user.last_login_at = now
    session.flush()
    append_event(session, user.name, user.role, "login", "user", user.name)
    return user


# ---------------------------------------------------------------- templates


def create_template(session: Session, *, actor: ActorRef, name: str, body: str) -> Template:
    by = require(session, actor, "template.create")
    validate.text(name, "template name", max_chars=validate.MAX_TITLE_CHARS)
    validate.text(body, "template body", max_chars=validate.MAX_TEMPLATE_CHARS)
    if session.scalar(select(Template.id).where(Template.name == name)) is not None:
        raise ValidationError(f"a template named {name!r} already exists")
    template = Template(name=name, body=body, created_by_id=by.id if by else None)
    session.add(template)
    session.flush()
    append_event(session, *_who(by), "template.create", "template", template.id, new={"name": name, "body": body})
    return template


def get_template(session: Session, template_id: int) -> Template:
    template = session.get(Template, template_id)
    if template is None:
        raise NotFound(f"no template {template_id}")
    return template


def get_template_by_name(session: Session, name: str) -> Template:
    template = session.scalar(select(Template).where(Template.name == name))
    if template is None:
        raise NotFound(f"no template named {name!r}")
    return template


def list_templates(session: Session) -> list[Template]:
    return list(session.scalars(select(Template).order_by(Template.name)))


# ---------------------------------------------------------------- documents


def create_document(session: Session, *, actor: ActorRef, title: str, template_id: int | None = None,
                    text: str = "") -> Document:
    by = require(session, actor, "document.create")
    validate.text(title, "title", max_chars=validate.MAX_TITLE_CHARS)
    validate.text(text, "document text", max_chars=validate.MAX_DOCUMENT_CHARS, allow_empty=True)
    if template_id is not None:
        get_template(session, template_id)
    now = utcnow()
    doc = Document(title=title, template_id=template_id, text=text, status="draft", created_by_id=by.id,
                   created_at=now, updated_by_id=by.id, updated_at=now)
    session.add(doc)
    session.flush()
    append_event(session, *_who(by), "document.create", "document", doc.id,
                 new={"title": title, "template_id": template_id, "text": text})
    return doc


def get_document(session: Session, document_id: int) -> Document:
    doc = session.get(Document, document_id)
    if doc is None:
        raise NotFound(f"no document {document_id}")
    return doc


def list_documents(session: Session, *, status: str | None = None, limit: int = 100, offset: int = 0) -> list[Document]:
    """Newest first."""
    stmt = select(Document).order_by(Document.updated_at.desc(), Document.id.desc()).limit(limit).offset(offset)
    if status is not None:
        if status not in DOCUMENT_STATUSES:
            raise ValidationError(f"unknown status {status!r}: choose one of {', '.join(DOCUMENT_STATUSES)}")
        stmt = stmt.where(Document.status == status)
    return list(session.scalars(stmt))


def documents_awaiting_review(session: Session, *, limit: int = 100) -> list[Document]:
    """Oldest first: the review queue."""
    stmt = select(Document).where(Document.status == "awaiting_review").order_by(Document.updated_at, Document.id)
    return list(session.scalars(stmt.limit(limit)))


def _lock_document(session: Session, document_id: int, expected_version: int) -> Document:
    """The document, fresh from the database and row-locked (PostgreSQL; SQLite holds the write lock
    already), or StaleWrite if someone saved another version since the caller read it."""
    stmt = (select(Document).where(Document.id == document_id).with_for_update()
            .execution_options(populate_existing=True))
    doc = session.scalars(stmt).one_or_none()
    if doc is None:
        raise NotFound(f"no document {document_id}")
    if not isinstance(expected_version, int) or doc.version != expected_version:
        who = session.scalar(select(User.name).where(User.id == doc.updated_by_id)) if doc.updated_by_id else None
        raise StaleWrite(f"document {doc.id} ({doc.title!r})", expected_version, doc.version, who, doc.updated_at)
    return doc


_SETTABLE_STATUSES = ("draft", "awaiting_review", "discarded")  # approved / rejected only through record_review


def update_document(session: Session, document_id: int, *, actor: ActorRef, expected_version: int,
                    text: str | None = None, title: str | None = None, status: str | None = None,
                    reason: str | None = None) -> Document:
    """Change text / title / status of the version the actor saw; StaleWrite if it moved on."""
    by = require(session, actor, "document.update")
    reason = validate.reason(reason, required=False)
    if text is not None:
        validate.text(text, "document text", max_chars=validate.MAX_DOCUMENT_CHARS, allow_empty=True)
    if title is not None:
        validate.text(title, "title", max_chars=validate.MAX_TITLE_CHARS)
    if status is not None and status not in _SETTABLE_STATUSES:
        raise ValidationError(f"status {status!r} cannot be set here: choose one of {', '.join(_SETTABLE_STATUSES)} "
                              "(approve and reject go through a review)")
    doc = _lock_document(session, document_id, expected_version)
    old: dict[str, Any] = {}
    new: dict[str, Any] = {}
    for field, value in (("text", text), ("title", title), ("status", status)):
        if value is not None and getattr(doc, field) != value:
            old[field], new[field] = getattr(doc, field), value
            setattr(doc, field, value)
    if not new:
        return doc
    doc.updated_by_id = by.id
    doc.updated_at = utcnow()
    session.flush()  # bumps doc.version
    new["version"] = doc.version
    old["version"] = expected_version
    append_event(session, *_who(by), "document.update", "document", doc.id, old=old, new=new, reason=reason)
    return doc


# ---------------------------------------------------------------- runs and steps


@dataclass(frozen=True)
class StepData:
    """One decoded step: token ids and confidences are plain lists of length n_tokens (L)."""

    run_id: int
    step_index: int
    t: float | None
    token_ids: list[int]  # (L,)
    confidences: list[float]  # (L,)
    created_at: datetime

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
                    decode_confidences(step.confidences), step.created_at)


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
                confidences: Sequence[float] | Any, *, t: float | None = None) -> Step:
    """Store one step compactly. Steps come in order: step_index must be the run's next index
    (0, or parent_step_index + 1 for a branch). Steps are machine output and not audited."""
    run = get_run(session, run_id)
    if run.status in ("finished", "discarded"):
        raise ValidationError(f"run {run_id} is {run.status}: start a branch to continue it")
    expected = _next_step_index(session, run)
    if step_index != expected:
        raise ValidationError(f"step {step_index} of run {run_id} is out of order: the next step is {expected}")
    ids, conf = encode_token_ids(token_ids), encode_confidences(confidences)
    if len(ids) // 4 != len(conf) // 2:
        raise ValidationError(f"{len(ids) // 4} token ids but {len(conf) // 2} confidences: they must match")
    step = Step(run_id=run_id, step_index=step_index, t=t, n_tokens=len(ids) // 4, token_ids=ids, confidences=conf)
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
        limit = current.parent_step_index
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


# ---------------------------------------------------------------- pins and edits


def _run_for(session: Session, document_id: int, run_id: int, step_index: int | None) -> tuple[Run, StepData]:
    run = get_run(session, run_id)
    if run.document_id != document_id:
        raise ValidationError(f"run {run_id} belongs to document {run.document_id}, not {document_id}")
    if step_index is None:
        raise ValidationError("a step index is required with a run")
    return run, get_step(session, run_id, step_index)


def add_pin(session: Session, *, document_id: int, actor: ActorRef, run_id: int, step_index: int,
            span_start: int, span_end: int, text: str, reason: str | None = None) -> Pin:
    """Pin tokens [span_start, span_end) of the run's sequence at step_index."""
    return _add_pins(session, document_id, actor, run_id, step_index, [(span_start, span_end)], text, "token",
                     reason)[0]


def add_term_pins(session: Session, *, document_id: int, actor: ActorRef, run_id: int, step_index: int,
                  term: str, spans: Sequence[tuple[int, int]], reason: str | None = None) -> list[Pin]:
    """"Lock term": one pin per occurrence of `term` (the caller finds the spans), one audit event."""
    if not spans:
        raise ValidationError(f"the term {term!r} does not occur in the draft: nothing to pin")
    return _add_pins(session, document_id, actor, run_id, step_index, list(spans), term, "term", reason)


def _add_pins(session: Session, document_id: int, actor: ActorRef, run_id: int, step_index: int,
              spans: list[tuple[int, int]], text: str, kind: str, reason: str | None) -> list[Pin]:
    by = require(session, actor, "pin")
    assert by is not None
    reason = validate.reason(reason, required=False)
    validate.text(text, "pinned text", max_chars=validate.MAX_EDIT_CHARS)
    get_document(session, document_id)
    run, step = _run_for(session, document_id, run_id, step_index)
    for start, end in spans:
        validate.span(start, end, step.n_tokens, "pin", allow_empty=False)
    pins = [Pin(document_id=document_id, run_id=run_id, step_index=step_index, span_start=s, span_end=e, text=text,
                kind=kind, reason=reason, created_by_id=by.id) for s, e in spans]
    session.add_all(pins)
    session.flush()
    action = "pin.add" if kind == "token" else "pin.lock_term"
    append_event(session, *_who(by), action, "pin", pins[0].id, document_id=document_id,
                 new={"pin_ids": [p.id for p in pins], "spans": [[s, e] for s, e in spans], "text": text,
                      "step_index": step_index},
                 reason=reason, settings=_run_settings(run, step_index))
    return pins


def remove_pin(session: Session, pin_id: int, *, actor: ActorRef, reason: str | None = None) -> Pin:
    """Unpin (the row is kept, marked removed)."""
    by = require(session, actor, "pin")
    assert by is not None
    reason = validate.reason(reason, required=False)
    pin = session.get(Pin, pin_id)
    if pin is None:
        raise NotFound(f"no pin {pin_id}")
    if pin.removed_at is not None:
        raise ValidationError(f"pin {pin_id} was already removed")
    pin.removed_at, pin.removed_by_id, pin.removed_reason = utcnow(), by.id, reason
    session.flush()
    append_event(session, *_who(by), "pin.remove", "pin", pin.id, document_id=pin.document_id,
                 old={"span": [pin.span_start, pin.span_end], "text": pin.text}, reason=reason)
    return pin


def active_pins(session: Session, *, run_id: int | None = None, document_id: int | None = None) -> list[Pin]:
    """Pins not removed, of one run (and its parent runs) or of a whole document."""
    stmt = select(Pin).where(Pin.removed_at.is_(None)).order_by(Pin.span_start, Pin.id)
    if run_id is not None:  # a branch inherits its parents' pins made up to the step it branched from
        lineage = _lineage(session, get_run(session, run_id))
        stmt = stmt.where(or_(*[
            Pin.run_id == r.id if limit is None else and_(Pin.run_id == r.id, Pin.step_index <= limit)
            for r, limit in lineage]))
    if document_id is not None:
        stmt = stmt.where(Pin.document_id == document_id)
    return list(session.scalars(stmt))


def record_edit(session: Session, *, document_id: int, actor: ActorRef, span_start: int, span_end: int,
                old_text: str, new_text: str, reason: str, run_id: int | None = None,
                step_index: int | None = None, expected_version: int | None = None) -> Edit:
    """Record a replacement of [span_start, span_end) by new_text.

    With run_id + step_index the span is in tokens of that step (the sampler applies it); it may
    not overlap an active pin. Without a run the span is in characters of the document's text:
    old_text must be what is there, expected_version must be the version the actor saw, and the
    document's text is changed (StaleWrite if another version was saved meanwhile).
    """
    by = require(session, actor, "edit")
    assert by is not None
    reason = validate.reason(reason, required=True)
    validate.text(old_text, "old text", max_chars=validate.MAX_EDIT_CHARS, allow_empty=True)
    validate.text(new_text, "new text", max_chars=validate.MAX_EDIT_CHARS, allow_empty=True)
    if old_text == new_text:
        raise ValidationError("the new text is the same as the old text: nothing to edit")
    settings: dict[str, Any] | None = None
    doc_old: dict[str, Any] = {}
    if run_id is not None:
        run, step = _run_for(session, document_id, run_id, step_index)
        validate.span(span_start, span_end, step.n_tokens, "edit", allow_empty=True)
        for pin in active_pins(session, run_id=run_id):
            inside = pin.span_start < span_start < pin.span_end
            if (span_start < pin.span_end and pin.span_start < span_end) or (span_start == span_end and inside):
                raise ValidationError(f"the edit [{span_start}, {span_end}) overlaps pinned tokens "
                                      f"[{pin.span_start}, {pin.span_end}) ({pin.text!r}): unpin them first")
        unit = "token"
        settings = _run_settings(run, step_index)
    else:
        if expected_version is None:
            raise ValidationError("an edit of the document's text needs the version you edited (expected_version)")
        doc = _lock_document(session, document_id, expected_version)
        validate.span(span_start, span_end, len(doc.text), "edit", allow_empty=True)
        there = doc.text[span_start:span_end]
        if there != old_text:
            raise ValidationError(f"the text at [{span_start}, {span_end}) is {there!r}, not {old_text!r}")
        text = doc.text[:span_start] + new_text + doc.text[span_end:]
        validate.text(text, "document text", max_chars=validate.MAX_DOCUMENT_CHARS, allow_empty=True)
        doc.text, doc.updated_by_id, doc.updated_at = text, by.id, utcnow()
        doc_old = {"version": expected_version}
        unit = "char"
    get_document(session, document_id)
    edit = Edit(document_id=document_id, run_id=run_id, step_index=step_index, unit=unit, span_start=span_start,
                span_end=span_end, old_text=old_text, new_text=new_text, reason=reason, created_by_id=by.id)
    session.add(edit)
    session.flush()  # for a char edit this also bumps the document's version
    new: dict[str, Any] = {"text": new_text, "edit_id": edit.id}
    if unit == "char":
        new["version"] = get_document(session, document_id).version
    append_event(session, *_who(by), "edit", "edit", edit.id, document_id=document_id,
                 old={"span": [span_start, span_end], "unit": unit, "text": old_text, **doc_old}, new=new,
                 reason=reason, settings=settings)
    return edit


def list_edits(session: Session, *, document_id: int | None = None, run_id: int | None = None) -> list[Edit]:
    stmt = select(Edit).order_by(Edit.id)
    if document_id is not None:
        stmt = stmt.where(Edit.document_id == document_id)
    if run_id is not None:
        stmt = stmt.where(Edit.run_id == run_id)
    return list(session.scalars(stmt))


# ---------------------------------------------------------------- reviews


def record_review(session: Session, *, document_id: int, actor: ActorRef, decision: str, expected_version: int,
                  reason: str | None = None) -> Review:
    """Approve or reject (reason required) the version the reviewer read; StaleWrite if it changed."""
    by = require(session, actor, "review")
    assert by is not None
    if decision not in REVIEW_DECISIONS:
        raise ValidationError(f"unknown decision {decision!r}: choose approve or reject")
    reason = validate.reason(reason, required=decision == "reject", what="reason for rejecting"
                             if decision == "reject" else "reason")
    doc = _lock_document(session, document_id, expected_version)
    if doc.status not in ("draft", "awaiting_review"):
        raise ValidationError(f"document {doc.id} is {doc.status}: only drafts and documents awaiting review "
                              "can be reviewed")
    old_status = doc.status
    doc.status = "approved" if decision == "approve" else "rejected"
    doc.updated_by_id, doc.updated_at = by.id, utcnow()
    review = Review(document_id=doc.id, document_version=expected_version, decision=decision, reason=reason,
                    reviewer_id=by.id)
    session.add(review)
    session.flush()
    append_event(session, *_who(by), f"review.{decision}", "document", doc.id,
                 old={"status": old_status, "version": expected_version},
                 new={"status": doc.status, "version": doc.version, "review_id": review.id}, reason=reason)
    return review


def list_reviews(session: Session, document_id: int) -> list[Review]:
    return list(session.scalars(select(Review).where(Review.document_id == document_id).order_by(Review.id)))


# ---------------------------------------------------------------- QA feedback

FeedbackGroup = Literal["term", "template", "model", "user"]
NO_TEMPLATE, NO_RUN = "(no template)", "(no run)"


@dataclass(frozen=True)
class FeedbackCount:
    """Pins and edits for one term / template / model version / user."""

    key: str
    pins: int
    edits: int

    @property
    def total(self) -> int:
        return self.pins + self.edits


def _feedback_key(table: type[Pin] | type[Edit], by: str) -> tuple[Any, list[Any]]:
    """The grouping column and the joins it needs."""
    if by == "term":
        col = table.text if table is Pin else table.old_text
        return func.lower(func.trim(col)), []
    if by == "template":
        return func.coalesce(Template.name, NO_TEMPLATE), [
            (Document, Document.id == table.document_id), (Template, Template.id == Document.template_id)]
    if by == "model":
        return func.coalesce(Run.model_id, NO_RUN), [(Run, Run.id == table.run_id)]
    if by == "user":
        return User.name, [(User, User.id == table.created_by_id)]
    raise ValidationError(f"unknown grouping {by!r}: choose term, template, model or user")


def feedback_counts(session: Session, by: FeedbackGroup, *, since: datetime | None = None,
                    until: datetime | None = None, include_removed_pins: bool = True) -> list[FeedbackCount]:
    """Pins and edits per term (pinned text / edited-away text, case-folded), per template, per
    model id, or per user; most acted-on first. since inclusive, until exclusive."""
    counts: dict[str, list[int]] = {}
    for slot, table in ((0, Pin), (1, Edit)):
        key, joins = _feedback_key(table, by)
        stmt = select(key, func.count(table.id)).select_from(table)
        for target, on in joins:
            stmt = stmt.outerjoin(target, on) if by in ("template", "model") else stmt.join(target, on)
        if since is not None:
            stmt = stmt.where(table.created_at >= since)
        if until is not None:
            stmt = stmt.where(table.created_at < until)
        if table is Pin and not include_removed_pins:
            stmt = stmt.where(Pin.removed_at.is_(None))
        for k, n in session.execute(stmt.group_by(key)):
            if by == "term" and not k:
                continue  # pure insertions have no old text
            counts.setdefault(k, [0, 0])[slot] += n
    rows = [FeedbackCount(k, p, e) for k, (p, e) in counts.items()]
    return sorted(rows, key=lambda r: (-r.total, r.key))


@dataclass(frozen=True)
class EditPair:
    """One correction as training data: what the model wrote and what a person put instead."""

    edit_id: int
    document_id: int
    template: str | None
    model_id: str | None
    user: str
    unit: str
    step_index: int | None
    old_text: str
    new_text: str
    reason: str
    created_at: datetime


def edit_pairs(session: Session, *, template_id: int | None = None, model_id: str | None = None,
               user: str | None = None, since: datetime | None = None, until: datetime | None = None) -> list[EditPair]:
    stmt = (select(Edit, Template.name, Run.model_id, User.name)
            .join(Document, Document.id == Edit.document_id)
            .outerjoin(Template, Template.id == Document.template_id)
            .outerjoin(Run, Run.id == Edit.run_id)
            .join(User, User.id == Edit.created_by_id)
            .order_by(Edit.id))
    if template_id is not None:
        stmt = stmt.where(Document.template_id == template_id)
    if model_id is not None:
        stmt = stmt.where(Run.model_id == model_id)
    if user is not None:
        stmt = stmt.where(User.name == user)
    if since is not None:
        stmt = stmt.where(Edit.created_at >= since)
    if until is not None:
        stmt = stmt.where(Edit.created_at < until)
    return [EditPair(e.id, e.document_id, t, m, u, e.unit, e.step_index, e.old_text, e.new_text, e.reason, e.created_at)
            for e, t, m, u in session.execute(stmt)]

