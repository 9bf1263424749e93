"""Users and passwords: Argon2id hashes, roles, enabling and disabling, setting a password.

Part of storage.repository (see its docstring for the glossary); Session first, never commits.
Signing in (the throttle, the lock, the audit of every attempt) is storage.repository.logins.

A password set by somebody else (an admin in the app, "system" at the command line or on first
start) is known to them: the user must choose a new one before any screen opens
(must_change_password), and every login session of the user ends. A user who changes their own
password clears the flag and ends their other sessions.
"""

from __future__ import annotations

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from sqlalchemy import select
from sqlalchemy.orm import Session

from storage import validate
from storage.audit import append_event
from storage.errors import NotFound, ValidationError
from storage.models import User
from storage.validate import SYSTEM_ACTOR
from storage.repository.roles import ActorRef, _who, can, require
from storage.repository.sessions import end_user_sessions


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


def check_password_hash(password_hash: str | None, password: object) -> bool:
    """verify_password, at the same cost when there is no hash to check (no user, a disabled or
    locked one): then a dummy hash is checked and the answer is False, so the time taken tells
    nothing about the user name."""
    global _DUMMY_HASH
    if not isinstance(password, str):
        password = ""
    if password_hash is None:
        if _DUMMY_HASH is None:
            _DUMMY_HASH = _hasher.hash("not a password, only equalises timing")
        verify_password(_DUMMY_HASH, password)
        return False
    return verify_password(password_hash, password)


def rehash_if_needed(user: User, password: str) -> None:
    """Store a new hash when the hasher's parameters changed since this one was made."""
    if _hasher.check_needs_rehash(user.password_hash):
        user.password_hash = _hasher.hash(password)


def create_user(session: Session, name: str, role: str, password: str, *, actor: ActorRef = SYSTEM_ACTOR,
                reason: str | None = None, must_change_password: bool = False) -> User:
    """A new enabled user with an Argon2id password hash; the password keeps validate.PASSWORD_RULES.
    must_change_password: the user must choose a new password before any screen opens."""
    by = require(session, actor, "user.manage")
    validate.user_name(name)
    validate.role(role)
    reason = validate.reason(reason, required=False)
    if find_user(session, name) is not None:
        raise ValidationError(f"user {name!r} already exists")
    validate.password(password, name)
    user = User(name=name, role=role, password_hash=hash_password(password), disabled=False, failed_logins=0,
                must_change_password=bool(must_change_password))
    session.add(user)
    session.flush()
    new = {"name": name, "role": role} | ({"must_change": True} if must_change_password else {})
    append_event(session, *_who(by), "user.create", "user", name, new=new, reason=reason)
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
    if disabled:
        end_user_sessions(session, user)
    session.flush()
    action = "user.disable" if disabled else "user.enable"
    append_event(session, *_who(by), action, "user", name, old={"disabled": not disabled},
                 new={"disabled": disabled}, reason=reason)
    return user


def set_password(session: Session, name: str, password: str, *, actor: ActorRef, reason: str | None = None,
                 keep_token: str | None = None) -> User:
    """Admins (or "system") set anyone's password: audited as user.set_password, the user must
    choose a new one at next login, and all their sessions end. A user may set their own (the
    caller has checked the old one): audited as user.password_change, the flag is cleared and
    their sessions end but the one whose token is keep_token. The audit never holds a password."""
    acting_name = actor.name if isinstance(actor, User) else actor
    own = acting_name == name
    by = get_user(session, name) if own else require(session, actor, "user.manage")
    user = get_user(session, name)
    validate.password(password, name)
    if own and verify_password(user.password_hash, password):
        raise ValidationError("the new password is the old one: choose another")
    reason = validate.reason(reason, required=False)
    user.password_hash = hash_password(password)
    user.failed_logins = 0
    user.must_change_password = not own
    end_user_sessions(session, user, keep_token=keep_token if own else None)
    session.flush()
    if own:
        append_event(session, *_who(by), "user.password_change", "user", name, reason=reason)
    else:
        append_event(session, *_who(by), "user.set_password", "user", name, new={"must_change": True},
                     reason=reason)
    return user
