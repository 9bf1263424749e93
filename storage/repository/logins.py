"""Signing in: the login throttle and account lock, shared by every replica through the database,
and the audit of every attempt.

Part of storage.repository (see its docstring for the glossary); Session first, never commits.

Glossary
  attempt     one password check. begin_attempt counts it as a failure at once (so attempts made
              in parallel see the count rise) and gives the time it may check the password;
              end_attempt undoes the count when the password was right
  key         the throttle row of an account name or client address: HMAC-SHA256 of kind and
              value under the database's "throttle" secret. A name that is no user is therefore
              never stored, neither in the throttle nor in the audit trail ("unknown user"),
              yet it is slowed and locked exactly as a real one, so the answers do not tell
              an outsider which names exist
  slot        the time an attempt may check its password: the slot of the last attempt on the
              same key plus LoginPolicy.delay(failures so far). Parallel attempts get slots one
              after the other, so sending many at once gains nothing
  lock        after LoginPolicy.lock_after consecutive failures an account name refuses every
              password (the right one too) until lock_s passed or an admin unlocks it
              (accounts.unlock_user); locking and unlocking a user are audited. Addresses are
              slowed, never locked (people behind one address would lock each other out)
"""

from __future__ import annotations

import hmac
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta
from hashlib import sha256
from typing import Any

from sqlalchemy import and_, delete, or_, select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.orm import Session

from storage import validate
from storage.audit import append_event
from storage.errors import ValidationError
from storage.models import LoginThrottle, ServerSecret, User, utcnow
from storage.repository.accounts import check_password_hash, get_user, rehash_if_needed
from storage.repository.roles import ActorRef, _who, require
from storage.validate import SYSTEM_ACTOR

ACCOUNT, ADDRESS = "account", "address"
THROTTLE_SECRET = "throttle"
UNKNOWN_USER = "unknown user"  # the object id of a failed login with a name that is no user
FORGET_AFTER = timedelta(days=1)  # throttle rows untouched this long (and not locked) are deleted
MAX_ADDRESS_CHARS = 64


@dataclass(frozen=True)
class LoginPolicy:
    """How hard the throttle holds. The defaults are the app's; tests use a small base delay."""

    base_delay_s: float = 0.5  # the wait before the 2nd consecutive failure's check; doubles each time
    max_delay_s: float = 8.0  # the longest wait between two checks on one key
    lock_after: int = 10  # consecutive failures of an account name that lock it
    lock_s: float = 15 * 60.0  # how long a lock lasts unless an admin unlocks it first
    window_s: float = 15 * 60.0  # failures older than this (with no lock) are forgotten
    address_allowance: int = 5  # failures from one address before its attempts are slowed

    def delay(self, failures: int) -> float:
        """Seconds between the last slot and the next after `failures` consecutive failures."""
        if failures <= 0 or self.base_delay_s <= 0:
            return 0.0
        return min(self.base_delay_s * 2.0 ** min(failures - 1, 40), self.max_delay_s)


DEFAULT_POLICY = LoginPolicy()


@dataclass(frozen=True)
class LoginAttempt:
    """What begin_attempt decided. `name` and `address` stay in memory; only keys are stored."""

    name: str
    address: str | None
    account_key: str
    address_key: str | None
    not_before: datetime  # check the password no earlier than this
    locked: bool  # the account name is locked: no password is checked, the answer is no

    def wait_s(self, now: datetime | None = None) -> float:
        return max(0.0, (self.not_before - (now or utcnow())).total_seconds())


def server_secret(session: Session, name: str) -> str:
    """A random hex secret shared by everything that uses this database, made on first use."""
    row = session.get(ServerSecret, name)
    if row is not None:
        return row.secret
    _insert_missing(session, ServerSecret, {"name": name, "secret": secrets.token_hex(32), "created_at": utcnow()})
    value = session.scalar(select(ServerSecret.secret).where(ServerSecret.name == name))
    assert value is not None
    return value


def _insert_missing(session: Session, model: Any, values: dict[str, Any]) -> None:
    """INSERT unless the primary key is there already (another replica may insert it at the same moment)."""
    insert = pg_insert if session.get_bind().dialect.name == "postgresql" else sqlite_insert
    session.execute(insert(model).values(**values).on_conflict_do_nothing())


def _key(secret: bytes, kind: str, value: str) -> str:
    return hmac.new(secret, f"{kind}\x00{value}".encode("utf-8", "surrogatepass"), sha256).hexdigest()


def throttle_key(session: Session, kind: str, value: str) -> str:
    return _key(bytes.fromhex(server_secret(session, THROTTLE_SECRET)), kind, value)


def _row(session: Session, kind: str, key: str, now: datetime) -> LoginThrottle:
    """The throttle row of `key`, created if missing, locked until the caller's commit (PostgreSQL;
    on SQLite the write transaction holds the whole database)."""
    _insert_missing(session, LoginThrottle, {"key_hash": key, "kind": kind, "failures": 0, "updated_at": now})
    row = session.scalar(select(LoginThrottle).where(LoginThrottle.key_hash == key).with_for_update()
                         .execution_options(populate_existing=True))
    assert row is not None
    return row


def find_login_user(session: Session, name: object) -> User | None:
    """The user of a submitted name; None for anything that cannot be one (too long, NUL, surrogates)."""
    if not isinstance(name, str) or not name or len(name) > validate.MAX_NAME_CHARS or "\x00" in name \
            or validate.unpaired_surrogate(name) is not None:
        return None
    return session.scalar(select(User).where(User.name == name))


def _forget_old(row: LoginThrottle, session: Session, name: str | None, policy: LoginPolicy, now: datetime) -> None:
    """A lock that ran out ends (audited for a user); failures older than the window are forgotten."""
    if row.locked_until is not None and row.locked_until <= now:
        ended = row.locked_until
        row.locked_until, row.failures = None, 0
        user = find_login_user(session, name) if name is not None else None
        if user is not None:
            user.failed_logins = 0
            append_event(session, SYSTEM_ACTOR, SYSTEM_ACTOR, "user.unlock", "user", user.name,
                         old={"locked_until": ended.isoformat()}, new={"why": "the lock timed out"})
    elif row.locked_until is None and row.updated_at <= now - timedelta(seconds=policy.window_s):
        row.failures = 0


def _locked(row: LoginThrottle, policy: LoginPolicy, now: datetime) -> bool:
    return (row.locked_until is not None and row.locked_until > now) or row.failures >= policy.lock_after


def _slot(row: LoginThrottle, delay: float, now: datetime) -> datetime:
    return now if row.last_slot_at is None else max(now, row.last_slot_at + timedelta(seconds=delay))


def _forget_rows(session: Session, now: datetime) -> None:
    """Delete rows untouched for FORGET_AFTER (and not locked). Rows another transaction holds
    are skipped, not waited for, so two attempts never wait on each other here."""
    old = session.scalars(select(LoginThrottle.key_hash).where(
        LoginThrottle.updated_at < now - FORGET_AFTER,
        or_(LoginThrottle.locked_until.is_(None), LoginThrottle.locked_until < now))
        .limit(100).with_for_update(skip_locked=True)).all()
    if old:
        session.execute(delete(LoginThrottle).where(LoginThrottle.key_hash.in_(old)))


def clean_address(address: object) -> str | None:
    if not isinstance(address, str) or not address.strip():
        return None
    return address.strip()[:MAX_ADDRESS_CHARS]


def begin_attempt(session: Session, name: str, address: str | None = None, policy: LoginPolicy = DEFAULT_POLICY,
                  *, now: datetime | None = None) -> LoginAttempt:
    """Count an attempt on account `name` (and on the client `address`, when known) and give its
    slot. Commit before waiting for the slot, so that other replicas see the count."""
    now = now or utcnow()
    name = name if isinstance(name, str) else ""
    address = clean_address(address)
    secret = bytes.fromhex(server_secret(session, THROTTLE_SECRET))
    _forget_rows(session, now)
    account = _row(session, ACCOUNT, _key(secret, ACCOUNT, name), now)
    _forget_old(account, session, name, policy, now)
    by_address = _row(session, ADDRESS, _key(secret, ADDRESS, address), now) if address else None
    if by_address is not None:
        _forget_old(by_address, session, None, policy, now)
    locked = _locked(account, policy, now)
    slot = now if locked else _slot(account, policy.delay(account.failures), now)
    if by_address is not None:
        slot = max(slot, _slot(by_address, policy.delay(by_address.failures - policy.address_allowance), now))
    for row in (account, by_address):
        if row is None or (row is account and locked):
            continue
        row.failures += 1
        row.last_slot_at = slot
        row.updated_at = now
    session.flush()
    return LoginAttempt(name=name, address=address, account_key=account.key_hash,
                        address_key=by_address.key_hash if by_address is not None else None,
                        not_before=slot, locked=locked)


def end_attempt(session: Session, attempt: LoginAttempt, ok: bool, policy: LoginPolicy = DEFAULT_POLICY, *,
                now: datetime | None = None) -> datetime | None:
    """Settle an attempt: a right password clears the account's failures and takes this attempt
    off the address's; a wrong one that reaches lock_after locks the account (audited as
    user.lock when the name is a user's). Returns the end of a lock set now, else None."""
    now = now or utcnow()
    rows = {r.key_hash: r for r in session.scalars(
        select(LoginThrottle).where(LoginThrottle.key_hash.in_([k for k in (attempt.account_key, attempt.address_key)
                                                               if k is not None]))
        .with_for_update().execution_options(populate_existing=True))}
    account, by_address = rows.get(attempt.account_key), rows.get(attempt.address_key or "")
    if ok:
        if account is not None:
            account.failures, account.locked_until, account.updated_at = 0, None, now
        if by_address is not None:
            by_address.failures = max(0, by_address.failures - 1)
        session.flush()
        return None
    if attempt.locked or account is None or account.locked_until is not None:
        return None
    if account.failures < policy.lock_after:
        return None
    account.locked_until = now + timedelta(seconds=policy.lock_s)
    account.updated_at = now
    session.flush()
    user = find_login_user(session, attempt.name)
    if user is not None:
        append_event(session, SYSTEM_ACTOR, SYSTEM_ACTOR, "user.lock", "user", user.name,
                     new={"failures": account.failures, "locked_until": account.locked_until.isoformat()})
    return account.locked_until


def finish_login(session: Session, attempt: LoginAttempt, *, password_ok: bool, seen_hash: str | None,
                 password: str | None = None, policy: LoginPolicy = DEFAULT_POLICY,
                 now: datetime | None = None) -> User | None:
    """Settle a login whose password was checked against `seen_hash` (None: nothing was checked)
    and audit it: login, or login.failed with why (unknown user, disabled, locked, wrong password).
    The user on success, else None. A hash that changed since it was read counts as wrong."""
    now = now or utcnow()
    user = find_login_user(session, attempt.name)
    why = ("unknown user" if user is None else "disabled" if user.disabled else "locked" if attempt.locked
           else "wrong password" if not password_ok or seen_hash is None or seen_hash != user.password_hash
           else None)
    where = {"address": attempt.address} if attempt.address else {}
    if user is None:
        append_event(session, SYSTEM_ACTOR, SYSTEM_ACTOR, "login.failed", "user", UNKNOWN_USER,
                     new={"why": why, **where})
    elif why is None:
        if isinstance(password, str):
            rehash_if_needed(user, password)
        user.failed_logins = 0
        user.last_login_at = now
        session.flush()
        append_event(session, user.name, user.role, "login", "user", user.name, new=where or None)
    else:
        user.failed_logins += 1
        user.last_failed_login_at = now
        session.flush()
        append_event(session, user.name, user.role, "login.failed", "user", user.name,
                     new={"why": why, "failed_logins": user.failed_logins, **where})
    end_attempt(session, attempt, why is None, policy, now=now)
    return user if why is None else None


def authenticate(session: Session, name: str, password: str, *, address: str | None = None,
                 policy: LoginPolicy = DEFAULT_POLICY) -> User | None:
    """The whole login in one transaction, without waiting for the slot (command lines and tests;
    the app waits between begin_attempt and finish_login, see app.auth). The enabled, unlocked
    user whose Argon2id hash matches, else None; commit afterwards either way."""
    attempt = begin_attempt(session, name, address, policy)
    user = find_login_user(session, attempt.name)
    seen = user.password_hash if user is not None and not user.disabled and not attempt.locked else None
    ok = check_password_hash(seen, password)
    return finish_login(session, attempt, password_ok=ok, seen_hash=seen,
                        password=password if isinstance(password, str) else None, policy=policy)


def user_locks(session: Session, names: list[str], *, now: datetime | None = None) -> dict[str, datetime]:
    """name -> end of its lock, for the names that are locked now."""
    now = now or utcnow()
    if not names:
        return {}
    secret = bytes.fromhex(server_secret(session, THROTTLE_SECRET))
    keys = {_key(secret, ACCOUNT, n): n for n in names}
    rows = session.scalars(select(LoginThrottle).where(
        and_(LoginThrottle.key_hash.in_(list(keys)), LoginThrottle.locked_until > now)))
    return {keys[r.key_hash]: r.locked_until for r in rows if r.locked_until is not None}


def unlock_user(session: Session, name: str, *, actor: ActorRef, reason: str) -> User:
    """An admin ends the lock of `name` (and its count of failures); audited as user.unlock."""
    by = require(session, actor, "user.manage")
    reason = validate.reason(reason, required=True)
    user = get_user(session, name)
    now = utcnow()
    row = session.scalar(select(LoginThrottle).where(LoginThrottle.key_hash == throttle_key(session, ACCOUNT, name))
                         .with_for_update().execution_options(populate_existing=True))
    if row is None or row.locked_until is None or row.locked_until <= now:
        raise ValidationError(f"user {name!r} is not locked")
    ended = row.locked_until
    row.locked_until, row.failures, row.updated_at = None, 0, now
    user.failed_logins = 0
    session.flush()
    append_event(session, *_who(by), "user.unlock", "user", name, old={"locked_until": ended.isoformat()},
                 new={"why": "unlocked by an admin"}, reason=reason)
    return user
