"""Users and passwords: Argon2id hashes, roles, enabling and disabling, sign-in.

Part of storage.repository (see its docstring for the glossary); Session first, never commits.
"""

from __future__ import annotations

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from sqlalchemy import select
from sqlalchemy.orm import Session

from storage import validate
from storage.audit import append_event
from storage.errors import NotFound, ValidationError
from storage.models import User, utcnow
from storage.validate import SYSTEM_ACTOR
from storage.repository.roles import ActorRef, _who, can, require


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
    """A new enabled user with an Argon2id password hash; the password keeps validate.PASSWORD_RULES."""
    by = require(session, actor, "user.manage")
    validate.user_name(name)
    validate.role(role)
    reason = validate.reason(reason, required=False)
    if find_user(session, name) is not None:
        raise ValidationError(f"user {name!r} already exists")
    validate.password(password, name)
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
    _keep_an_admin(session, user, f"the role of {name!r} cannot change")
    old = user.role
    user.role = role
    session.flush()
    append_event(session, *_who(by), "user.set_role", "user", name, old={"role": old}, new={"role": role}, reason=reason)
    return user


def _keep_an_admin(session: Session, user: User, what: str) -> None:
    """Refuse to take away the last enabled user who may manage users (nobody could add or
    restore one from the app afterwards)."""
    if not can(user.role, "user.manage") or user.disabled:
        return
    managers = [u for u in list_users(session) if can(u.role, "user.manage") and not u.disabled]
    if len(managers) <= 1:
        raise ValidationError(f"{what}: {user.name!r} is the last enabled user who can manage users")


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
    if disabled:
        _keep_an_admin(session, user, f"{name!r} cannot be disabled")
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
    validate.password(password, name)
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
