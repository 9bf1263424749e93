"""Login and role checks, on the server.

Glossary
  Actor       the logged-in user as handlers see them: name and role, read from the database on
              every request (a role changed by an admin applies at once; a disabled user is out)
  screen      draft, review, audit, admin: the roles that may use it are the roles with the
              screen's permission (SCREEN_PERMISSIONS), so screens follow the storage table
  permission  what an act needs, as storage.repository.PERMISSIONS defines it (pin, edit, review,
              export, ...): the app asks the same table the storage layer enforces
  guard       counts consecutive failed logins per name (known or not) and makes the next attempt
              wait base * 2^(n-1) seconds, at most MAX_DELAY_S; a success resets it. The database
              counts failures per user too (users.failed_logins) and audits every attempt.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from storage import repository as repo
from storage.db import transaction
from storage.models import ROLES

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
MAX_DELAY_S = 8.0


class AccessDenied(Exception):
    """Not logged in, unknown or disabled user, or a role without the right. The message is shown."""


@dataclass(frozen=True)
class Actor:
    name: str
    role: str


class LoginGuard:
    def __init__(self, base_delay_s: float = 0.5, max_delay_s: float = MAX_DELAY_S) -> None:
        self.base_delay_s = base_delay_s
        self.max_delay_s = max_delay_s
        self._failures: dict[str, int] = {}
        self._lock = threading.Lock()

    def delay_for(self, name: str) -> float:
        n = self._failures.get(name.lower(), 0)
        return 0.0 if n == 0 else min(self.base_delay_s * 2 ** (n - 1), self.max_delay_s)

    def failures(self, name: str) -> int:
        return self._failures.get(name.lower(), 0)

    def failed(self, name: str) -> None:
        with self._lock:
            key = name.lower()
            self._failures[key] = self._failures.get(key, 0) + 1

    def succeeded(self, name: str) -> None:
        with self._lock:
            self._failures.pop(name.lower(), None)


def check_password(svc: Services, name: str, password: str) -> Actor | None:
    """storage's authenticate (Argon2id; counts and audits the attempt), committed. No waiting."""
    if not isinstance(name, str) or not isinstance(password, str) or not name or len(name) > 64 or len(password) > 1024:
        return None
    with transaction(svc.factory) as s:
        user = repo.authenticate(s, name, password)
        actor = Actor(user.name, user.role) if user is not None else None
    if actor is None:
        svc.guard.failed(name)
    else:
        svc.guard.succeeded(name)
    return actor


def login(svc: Services, name: str, password: str) -> Actor | None:
    """Wait as the guard says for this name, then check the password."""
    delay = svc.guard.delay_for(name or "")
    if delay:
        time.sleep(delay)
    return check_password(svc, name, password)


def gradio_auth(svc: Services) -> Callable[[str, str], Awaitable[bool]]:
    """The `auth=` callable for Blocks.launch: async, so waiting never blocks the server."""

    async def auth(username: str, password: str) -> bool:
        delay = svc.guard.delay_for(username or "")
        if delay:
            await asyncio.sleep(delay)
        try:
            return await asyncio.to_thread(check_password, svc, username, password) is not None
        except Exception:  # the login page shows "Incorrect credentials"; the reason goes to the log
            log.exception("login check failed")
            return False

    return auth


def actor_for(svc: Services, username: str | None) -> Actor:
    """The current user, fresh from the database; AccessDenied if not logged in, unknown or disabled."""
    if not username:
        raise AccessDenied("you are not logged in: reload the page and log in")
    with svc.reader() as s:
        user = repo.find_user(s, username)
        if user is None:
            raise AccessDenied(f"unknown user {username!r}: log in again")
        if user.disabled:
            raise AccessDenied(f"user {username!r} is disabled")
        return Actor(user.name, user.role)


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
