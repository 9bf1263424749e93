"""Login and role checks, on the server.

Glossary
  Actor       the logged-in user as handlers see them: name and role, read from the database on
              every request (a role changed by an admin applies at once; a disabled user is out)
  screen      draft, review, audit, admin: the roles that may use it are the roles with the
              screen's permission (SCREEN_PERMISSIONS), so screens follow the storage table
  permission  what an act needs, as storage.repository.PERMISSIONS defines it (pin, edit, review,
              export, ...): the app asks the same table the storage layer enforces
  login       storage.repository.logins: every attempt is counted in the database before its
              password is checked (so replicas, and attempts sent in parallel, see the count) and
              waits for its slot; ten failures in a row lock the name (svc.login_policy says how
              long and how fast). A name that is no user is never stored: the trail says
              "unknown user". The signature and the change of password use the same count.
  must change a user whose password somebody else set (first-run admin, added or reset by an
              admin) may open no screen until they choose a new one (the Password tab)
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from contextvars import ContextVar
from dataclasses import dataclass
from typing import TYPE_CHECKING

from storage import repository as repo
from storage.db import transaction
from storage.models import ROLES
from storage.repository import LoginAttempt

if TYPE_CHECKING:
    from app.services import Services

log = logging.getLogger("app.auth")

SCREEN_PERMISSIONS: dict[str, str] = {
    "draft": "run.create",
    "review": "review",
    "audit": "audit.read",
    "admin": "user.manage",
}
SCREENS: dict[str, frozenset[str]] = {
    screen: frozenset(role for role in ROLES if repo.can(role, permission))
    for screen, permission in SCREEN_PERMISSIONS.items()
}
MAX_PASSWORD_CHARS = 1024  # longer input is not hashed (it is refused, and counted as a failure)
# the client address of the POST /login being answered (uvicorn has applied X-Forwarded-For from
# the addresses in $FORWARDED_ALLOW_IPS, by default 127.0.0.1 only)
CLIENT_ADDRESS: ContextVar[str | None] = ContextVar("diffdraft_client_address", default=None)
MUST_CHANGE = ("{name} must choose a new password before using DiffDraft: open the Password tab, type the "
               "password you logged in with, then the new one twice")


class AccessDenied(Exception):
    """Not logged in, unknown or disabled user, or a role without the right. The message is shown."""


@dataclass(frozen=True)
class Actor:
    name: str
    role: str
    must_change_password: bool = False  # only ever True from actor_for(..., password_change=True)


def _begin(svc: Services, name: object, address: str | None) -> LoginAttempt:
    """Count the attempt in the database (every replica sees it) and get its slot, committed."""
    with transaction(svc.factory) as s:
        return repo.begin_attempt(s, name if isinstance(name, str) else "", address, svc.login_policy)


def _check(svc: Services, attempt: LoginAttempt, password: object) -> Actor | None:
    """Check the password (outside any transaction: Argon2id takes a while) and settle the attempt."""
    ok_input = isinstance(password, str) and len(password) <= MAX_PASSWORD_CHARS
    with svc.reader() as s:
        user = repo.find_login_user(s, attempt.name)
        seen = user.password_hash if user is not None and not user.disabled and not attempt.locked else None
    ok = repo.check_password_hash(seen if ok_input else None, password if ok_input else "")
    with transaction(svc.factory) as s:
        found = repo.finish_login(s, attempt, password_ok=ok, seen_hash=seen,
                                  password=password if ok_input and isinstance(password, str) else None,
                                  policy=svc.login_policy)
        return Actor(found.name, found.role) if found is not None else None


def login(svc: Services, name: object, password: object, address: str | None = None) -> Actor | None:
    """The whole login, waiting (blocking) for the attempt's slot: the user, or None."""
    attempt = _begin(svc, name, address)
    wait = attempt.wait_s()
    if wait:
        time.sleep(wait)
    return _check(svc, attempt, password)


def gradio_auth(svc: Services) -> Callable[[str, str], Awaitable[bool]]:
    """The `auth=` callable for Blocks.launch: async, so waiting never blocks the server. The
    client's address comes from CLIENT_ADDRESS (set by app.session_guard around POST /login)."""

    async def auth(username: str, password: str) -> bool:
        try:
            attempt = await asyncio.to_thread(_begin, svc, username, CLIENT_ADDRESS.get())
            wait = attempt.wait_s()
            if wait:
                await asyncio.sleep(wait)
            return await asyncio.to_thread(_check, svc, attempt, password) is not None
        except Exception:  # the login page shows "Incorrect credentials"; the reason goes to the log
            log.exception("login check failed")
            return False

    return auth


def check_own_password(svc: Services, name: str, password: object) -> tuple[bool, str | None]:
    """Whether `password` is the logged-in user's own (signing, changing the password), through the
    same throttle and lock as a login; (right?, a refusal to show when the account is locked)."""
    attempt = _begin(svc, name, None)
    wait = attempt.wait_s()
    if wait:
        time.sleep(wait)
    with svc.reader() as s:
        user = repo.find_user(s, name)
        seen = user.password_hash if user is not None and not attempt.locked else None
    ok = isinstance(password, str) and len(password) <= MAX_PASSWORD_CHARS and repo.check_password_hash(seen, password)
    with transaction(svc.factory) as s:
        repo.end_attempt(s, attempt, ok, svc.login_policy)
    if attempt.locked:
        minutes = round(svc.login_policy.lock_s / 60)
        return False, (f"too many wrong passwords in a row: the account is locked for up to {minutes} minutes "
                       "or until an admin unlocks it")
    return ok, None


def actor_for(svc: Services, username: str | None, *, password_change: bool = False) -> Actor:
    """The current user, fresh from the database; AccessDenied if not logged in, unknown or
    disabled, or (unless password_change) while they must choose a new password."""
    if not username:
        raise AccessDenied("you are not logged in: reload the page and log in")
    with svc.reader() as s:
        user = repo.find_user(s, username)
        if user is None:
            raise AccessDenied(f"unknown user {username!r}: log in again")
        if user.disabled:
            raise AccessDenied(f"user {username!r} is disabled")
        if user.must_change_password and not password_change:
            raise AccessDenied(MUST_CHANGE.format(name=user.name))
        return Actor(user.name, user.role, bool(user.must_change_password))


def require_screen(svc: Services, username: str | None, screen: str) -> Actor:
    actor = actor_for(svc, username)
    if actor.role not in SCREENS[screen]:
        allowed = " or ".join(sorted(SCREENS[screen]))
        raise AccessDenied(f"{actor.name} is a {actor.role}; the {screen} screen is for {allowed}")
    return actor


def require_permission(svc: Services, username: str | None, permission: str, what: str) -> Actor:
    """Refuse early, with the same rule storage enforces (storage.repository.can)."""
    actor = actor_for(svc, username)
    if not repo.can(actor.role, permission):
        roles = [r for r in ROLES if repo.can(r, permission)]
        raise AccessDenied(f"{actor.name} is a {actor.role} and may not {what} (needs role {' or '.join(roles)})")
    return actor
