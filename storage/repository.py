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
from sqlalchemy import func, select
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
    "list_reviews", "SIGNATURE_METHOD", "feedback_counts", "FeedbackCount", "edit_pairs", "EditPair",
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


# ---------------------------------------------------------------- pins and edits
#
# Which pins hold for a run (the rule, also in docs/STORAGE.md):
#   * its own pins, unless unpinned;
#   * for a branch of run A made from step k at time T (the branch's started_at): the pins that
#     were in effect for A at step k at time T, recursively up the lineage. That is each pin of A
#     (own or inherited) with step_index <= k, created at or before T, and not unpinned at a step
#     <= k at or before T. So a pin A makes later (even at an earlier step) does not reach the
#     branch, and a pin A removes later (or removed at a step after k) still holds in the branch.
#     Removals made before migration 0002 have no step and count as made at every step.
#   * a pin row's span never changes. An edit that changes the length moves the pins after it by
#     writing new rows (supersedes_pin_id = the row they replace, step_index = the edit's step, in
#     the edited run); a row hides the row it supersedes for every run that sees the new row. So
#     the parent keeps its positions when a branch moves an inherited pin, and a branch made
#     before the edit keeps the old positions. Unpinning a pin inherited from a parent likewise
#     writes a removed row in the branch that supersedes it (the parent's pin is untouched).


def _pin_views(session: Session, run: Run, at_step: int | None = None) -> list[tuple[Run, int | None, datetime | None]]:
    """[(run, last step seen from it or None for all, time it was branched away from or None)], the run first."""
    out: list[tuple[Run, int | None, datetime | None]] = []
    limit, cutoff = at_step, None
    current = run
    while True:
        out.append((current, limit, cutoff))
        if current.parent_run_id is None or current.parent_step_index is None:
            return out
        limit = current.parent_step_index if limit is None else min(limit, current.parent_step_index)
        cutoff = current.started_at if cutoff is None else min(cutoff, current.started_at)
        current = get_run(session, current.parent_run_id)


def _still_pinned(pin: Pin, limit: int | None, cutoff: datetime | None) -> bool:
    if pin.removed_at is None:
        return True
    if cutoff is not None and pin.removed_at > cutoff:
        return True  # unpinned after the branch was made
    return limit is not None and pin.removed_step_index is not None and pin.removed_step_index > limit


def _pins_in_effect(session: Session, run: Run, at_step: int | None = None) -> list[Pin]:
    """Every pin row (all kinds) holding for `run` now, or at its step `at_step`; by position."""
    rows: list[tuple[Pin, bool]] = []
    for r, limit, cutoff in _pin_views(session, run, at_step):
        stmt = select(Pin).where(Pin.run_id == r.id)
        if limit is not None:
            stmt = stmt.where(Pin.step_index <= limit)
        for pin in session.scalars(stmt):
            if cutoff is None or pin.created_at <= cutoff:
                rows.append((pin, _still_pinned(pin, limit, cutoff)))
    replaced = {p.supersedes_pin_id for p, _ in rows if p.supersedes_pin_id is not None}
    out = [p for p, alive in rows if alive and p.id not in replaced]
    return sorted(out, key=lambda p: (p.span_start, p.id))


def _latest_step_index(session: Session, run: Run) -> int | None:
    last = session.scalar(select(func.max(Step.step_index)).where(Step.run_id == run.id))
    return last if last is not None else run.parent_step_index


def _length_at(session: Session, run: Run, step_index: int, recorded: int) -> int:
    """The draft's length at a step of a run: the recorded step's, changed by the token edits made
    at that step (each changes it by new_n_tokens - (span_end - span_start))."""
    length = recorded
    for r, _, cutoff in _pin_views(session, run, step_index):
        stmt = select(Edit).where(Edit.run_id == r.id, Edit.step_index == step_index, Edit.unit == "token",
                                  Edit.new_n_tokens.is_not(None))
        for e in session.scalars(stmt):
            if cutoff is None or e.created_at <= cutoff:
                length += e.new_n_tokens - (e.span_end - e.span_start)  # type: ignore[operator]
    return length


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
    length = _length_at(session, run, step_index, step.n_tokens)
    for start, end in spans:
        validate.span(start, end, length, "pin", allow_empty=False)
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


def _descends_from(session: Session, pin: Pin, ancestor_id: int) -> bool:
    seen: set[int] = set()
    current: Pin | None = pin
    while current is not None and current.supersedes_pin_id is not None and current.id not in seen:
        if current.supersedes_pin_id == ancestor_id:
            return True
        seen.add(current.id)
        current = session.get(Pin, current.supersedes_pin_id)
    return False


def remove_pin(session: Session, pin_id: int, *, actor: ActorRef, reason: str | None = None,
               run_id: int | None = None, step_index: int | None = None) -> Pin:
    """Unpin, in run `run_id` (default: the pin's own run) at its step `step_index` (default: the
    run's latest step). `pin_id` may be an earlier id of a pin an edit has moved since: the row
    holding now is unpinned. A pin of the run itself is marked removed (the row is kept); a pin the
    run inherited from a parent gets a removed row in this run that supersedes it, so the parent
    and its other branches keep it."""
    by = require(session, actor, "pin")
    assert by is not None
    reason = validate.reason(reason, required=False)
    pin = session.get(Pin, pin_id)
    if pin is None:
        raise NotFound(f"no pin {pin_id}")
    rid = run_id if run_id is not None else pin.run_id
    if rid is None:  # a pin without a run
        if pin.removed_at is not None:
            raise ValidationError(f"pin {pin_id} was already removed")
        targets, run, at = [pin], None, None
    else:
        run = get_run(session, rid)
        if run.document_id != pin.document_id:
            raise ValidationError(f"pin {pin_id} belongs to document {pin.document_id}, not to run {rid}'s")
        if step_index is not None:
            get_step(session, run.id, step_index)
        at = step_index if step_index is not None else _latest_step_index(session, run)
        holding = _pins_in_effect(session, run, step_index)
        targets = [p for p in holding if p.id == pin_id] or [p for p in holding if _descends_from(session, p, pin_id)]
        if not targets:
            if pin.removed_at is not None:
                raise ValidationError(f"pin {pin_id} was already removed")
            raise ValidationError(f"pin {pin_id} does not hold in run {rid}"
                                  + (f" at step {step_index}" if step_index is not None else ""))
        if any(p.removed_at is not None and p.run_id == run.id for p in targets):  # seen at an earlier step
            raise ValidationError(f"pin {pin_id} was already removed")
    now = utcnow()
    out: list[Pin] = []
    for target in targets:
        if run is None or target.run_id == run.id:
            row = target
        else:
            row = Pin(document_id=target.document_id, run_id=run.id, step_index=at, span_start=target.span_start,
                      span_end=target.span_end, text=target.text, kind=target.kind, reason=target.reason,
                      created_by_id=target.created_by_id, supersedes_pin_id=target.id, edit_id=target.edit_id)
            session.add(row)
        row.removed_at, row.removed_by_id, row.removed_reason, row.removed_step_index = now, by.id, reason, at
        out.append(row)
    session.flush()
    for target, row in zip(targets, out):
        new = None if row is target else {"run_id": row.run_id, "step_index": at, "pin_id": row.id}
        append_event(session, *_who(by), "pin.remove", "pin", target.id, document_id=target.document_id,
                     old={"span": [target.span_start, target.span_end], "text": target.text}, new=new, reason=reason)
    return out[0]


def active_pins(session: Session, *, run_id: int | None = None, document_id: int | None = None,
                include_edits: bool = False) -> list[Pin]:
    """The pins holding for one run (its own and those it inherits, see the rule above), or the pins
    not removed of a whole document (each run's current rows), by position. Pins made by edits
    (kind "edit": the tokens an edit put in, which the sampler holds) only with include_edits."""
    if run_id is not None:
        pins = _pins_in_effect(session, get_run(session, run_id))
        if document_id is not None:
            pins = [p for p in pins if p.document_id == document_id]
    else:
        stmt = select(Pin).where(Pin.removed_at.is_(None)).order_by(Pin.span_start, Pin.id)
        if document_id is not None:
            stmt = stmt.where(Pin.document_id == document_id)
        pins = list(session.scalars(stmt))
        later = select(Pin.run_id, Pin.supersedes_pin_id).where(Pin.supersedes_pin_id.is_not(None))
        if document_id is not None:
            later = later.where(Pin.document_id == document_id)
        moved = {(r, i) for r, i in session.execute(later)}  # replaced in their own run
        pins = [p for p in pins if (p.run_id, p.id) not in moved]
    return pins if include_edits else [p for p in pins if p.kind != "edit"]


def _overlaps(pin: Pin, start: int, end: int) -> bool:
    """Whether an edit of [start, end) touches the pin (an insertion strictly inside it counts)."""
    return (start < pin.span_end and pin.span_start < end) or (start == end and pin.span_start < start < pin.span_end)


def _replace_pin(pin: Pin, run: Run, step_index: int, spans: list[tuple[int, int]], edit: Edit) -> list[Pin]:
    """New rows in `run` from `step_index` on that take the place of `pin` (none: it ends here)."""
    rows = [Pin(document_id=pin.document_id, run_id=run.id, step_index=step_index, span_start=s, span_end=e,
                text=pin.text, kind=pin.kind, reason=pin.reason, created_by_id=pin.created_by_id,
                supersedes_pin_id=pin.id, edit_id=edit.id) for s, e in spans]
    if pin.run_id == run.id and pin.removed_at is not None:  # seen from an earlier step: unpinned later
        for row in rows:
            row.removed_at, row.removed_by_id = pin.removed_at, pin.removed_by_id
            row.removed_reason, row.removed_step_index = pin.removed_reason, pin.removed_step_index
    return rows


def record_edit(session: Session, *, document_id: int, actor: ActorRef, span_start: int, span_end: int,
                old_text: str, new_text: str, reason: str, run_id: int | None = None,
                step_index: int | None = None, expected_version: int | None = None,
                new_n_tokens: int | None = None) -> Edit:
    """Record a replacement of [span_start, span_end) by new_text.

    With run_id + step_index the span is in tokens of that step (the sampler applies it) and
    new_n_tokens is how many tokens new_text is (default: as many as the span; 0 for ""). As in
    engine.sampler.apply_edit, the span may not overlap a pin holding for the run (nor may an
    insertion fall strictly inside one; pins made by earlier edits are released instead, their parts
    outside the span kept), the pins after the span move by new_n_tokens - (span_end - span_start)
    (new rows, one "pin.move" event), and the new tokens become a pin of kind "edit".
    Without a run the span is in characters of the document's text: old_text must be what is
    there, expected_version must be the version the actor saw, and the document's text is changed
    (StaleWrite if another version was saved meanwhile).
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
    held: list[Pin] = []
    n_new: int | None = None
    if run_id is not None:
        run, step = _run_for(session, document_id, run_id, step_index)
        assert step_index is not None
        validate.span(span_start, span_end, _length_at(session, run, step_index, step.n_tokens), "edit",
                      allow_empty=True)
        if new_n_tokens is None:
            n_new = span_end - span_start if new_text else 0
        elif isinstance(new_n_tokens, bool) or not isinstance(new_n_tokens, int) or not 0 <= new_n_tokens <= 1_000_000:
            raise ValidationError("new_n_tokens must be a whole number of tokens, 0 or more")
        else:
            n_new = new_n_tokens
        held = _pins_in_effect(session, run, at_step=step_index)
        for pin in held:
            if pin.kind != "edit" and _overlaps(pin, span_start, span_end):
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
                span_end=span_end, old_text=old_text, new_text=new_text, new_n_tokens=n_new, reason=reason,
                created_by_id=by.id)
    session.add(edit)
    session.flush()  # for a char edit this also bumps the document's version
    new: dict[str, Any] = {"text": new_text, "edit_id": edit.id}
    moves: list[tuple[Pin, list[Pin]]] = []
    if unit == "char":
        new["version"] = get_document(session, document_id).version
    else:
        assert n_new is not None and step_index is not None
        delta = n_new - (span_end - span_start)
        for pin in held:
            if pin.kind == "edit" and _overlaps(pin, span_start, span_end):  # released; its outer parts stay
                spans = [(pin.span_start, span_start)] if pin.span_start < span_start else []
                if pin.span_end > span_end:
                    spans.append((span_end + delta, pin.span_end + delta))
                moves.append((pin, _replace_pin(pin, run, step_index, spans, edit)))
            elif pin.span_start >= span_end and delta != 0:
                moves.append((pin, _replace_pin(pin, run, step_index,
                                                [(pin.span_start + delta, pin.span_end + delta)], edit)))
        edit_pin = None
        if n_new > 0:
            edit_pin = Pin(document_id=document_id, run_id=run_id, step_index=step_index, span_start=span_start,
                           span_end=span_start + n_new, text=new_text, kind="edit", created_by_id=by.id,
                           edit_id=edit.id)
            session.add(edit_pin)
        session.add_all([row for _, rows in moves for row in rows])
        session.flush()
        new.update({"n_tokens": n_new, "pin_id": edit_pin.id if edit_pin is not None else None})
    append_event(session, *_who(by), "edit", "edit", edit.id, document_id=document_id,
                 old={"span": [span_start, span_end], "unit": unit, "text": old_text, **doc_old}, new=new,
                 reason=reason, settings=settings)
    if moves:
        append_event(session, *_who(by), "pin.move", "edit", edit.id, document_id=document_id,
                     old={"pins": [{"id": p.id, "span": [p.span_start, p.span_end]} for p, _ in moves]},
                     new={"pins": [{"id": r.id, "span": [r.span_start, r.span_end], "replaces": p.id}
                                   for p, rows in moves for r in rows],
                          "shift": n_new - (span_end - span_start) if n_new is not None else 0},
                     settings=settings)
    return edit


def list_edits(session: Session, *, document_id: int | None = None, run_id: int | None = None) -> list[Edit]:
    stmt = select(Edit).order_by(Edit.id)
    if document_id is not None:
        stmt = stmt.where(Edit.document_id == document_id)
    if run_id is not None:
        stmt = stmt.where(Edit.run_id == run_id)
    return list(session.scalars(stmt))


# ---------------------------------------------------------------- reviews

SIGNATURE_METHOD = "password re-entry"


def record_review(session: Session, *, document_id: int, actor: ActorRef, decision: str, expected_version: int,
                  signature_meaning: str, signature_method: str = SIGNATURE_METHOD,
                  reason: str | None = None) -> Review:
    """Approve or reject (reason required) the version the reviewer read, signed: the review row and
    its audit event carry what the signature means (e.g. "approved as reviewed and correct"), who
    signed (the actor), when (UTC) and how (e.g. "password re-entry"; the caller checks it).
    StaleWrite if the document changed."""
    by = require(session, actor, "review")
    assert by is not None
    if decision not in REVIEW_DECISIONS:
        raise ValidationError(f"unknown decision {decision!r}: choose approve or reject")
    reason = validate.reason(reason, required=decision == "reject", what="reason for rejecting"
                             if decision == "reject" else "reason")
    meaning = validate.reason(signature_meaning, required=True, what="meaning of the signature")
    method = validate.reason(signature_method, required=True, what="signature method")
    assert meaning is not None and method is not None
    if len(method) > 64:
        raise ValidationError(f"the signature method is {len(method)} characters long; at most 64 are allowed")
    doc = _lock_document(session, document_id, expected_version)
    if doc.status not in ("draft", "awaiting_review"):
        raise ValidationError(f"document {doc.id} is {doc.status}: only drafts and documents awaiting review "
                              "can be reviewed")
    old_status = doc.status
    now = utcnow()
    doc.status = "approved" if decision == "approve" else "rejected"
    doc.updated_by_id, doc.updated_at = by.id, now
    review = Review(document_id=doc.id, document_version=expected_version, decision=decision, reason=reason,
                    reviewer_id=by.id, created_at=now, signature_meaning=meaning, signed_by=by.name, signed_at=now,
                    signature_method=method)
    session.add(review)
    session.flush()
    append_event(session, *_who(by), f"review.{decision}", "document", doc.id,
                 old={"status": old_status, "version": expected_version},
                 new={"status": doc.status, "version": doc.version, "review_id": review.id,
                      "signature": {"meaning": meaning, "signed_by": by.name, "signed_at": now, "method": method}},
                 reason=reason)
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
        if table is Pin:  # people's pins: not the rows edits make or move
            stmt = stmt.where(Pin.kind != "edit", Pin.supersedes_pin_id.is_(None))
            if not include_removed_pins:
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



def record_run_edit(session: Session, *, document_id: int, actor: ActorRef, run_id: int, step_index: int,
                    span_start: int, span_end: int, old_text: str, new_text: str, reason: str,
                    new_n_tokens: int | None = None) -> Edit:
    """An edit of a run's tokens at one step (see record_edit)."""
    return record_edit(session, document_id=document_id, actor=actor, span_start=span_start, span_end=span_end,
                       old_text=old_text, new_text=new_text, reason=reason, run_id=run_id, step_index=step_index,
                       new_n_tokens=new_n_tokens)
