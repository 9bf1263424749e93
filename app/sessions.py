"""Who a request belongs to: login sessions kept in the database, and the owner of each Gradio
page session (session hash) in this process.

Glossary
  token        the random value of Gradio's login cookie (access-token-<cookie id>). Gradio keeps
               token -> user name in App.tokens, a dict in one process's memory: a restart or
               another replica would not know it. LoginSessions takes the dict's place (installed
               by app.session_guard) and keeps the sessions in the login_sessions table, by the
               SHA-256 of the token, so every replica on the database accepts them until they
               expire (SESSION_TTL_S), the user logs out, is disabled, or has a password set
  cookie id    the cookie's name suffix, random per process in Gradio; here one value per
               database (server secret "cookie"), so a cookie set by one replica is read by all
  session hash the random id the page makes for itself; Gradio keys a page's events, streams and
               state by it. SessionOwners records which user first used each hash in this
               process (its events only ever run here), so that only that user can cancel its
               events, read its stream or close it (app.session_guard refuses the others)
"""

from __future__ import annotations

import logging
import threading
from collections import OrderedDict
from collections.abc import Iterator, MutableMapping

from sqlalchemy.orm import Session, sessionmaker

from storage import repository as repo
from storage.db import transaction

log = logging.getLogger(__name__)

SESSION_TTL_S = 12 * 3600.0  # a login lasts a working day at most; then the login form comes back
COOKIE_SECRET = "cookie"
MAX_OWNED_SESSIONS = 100_000  # page sessions remembered per process (the oldest is forgotten first)


class LoginSessions(MutableMapping[str, str]):
    """Gradio's App.tokens (token -> user name), kept in the database. Tokens are stored hashed
    and cannot be listed: iterating gives nothing (Gradio's /logout loop then ends nothing itself;
    app.session_guard ends the sessions before it runs)."""

    def __init__(self, factory: sessionmaker[Session], reader: sessionmaker[Session], *,
                 ttl_s: float = SESSION_TTL_S) -> None:
        self.factory, self.reader, self.ttl_s = factory, reader, ttl_s
        with transaction(factory) as s:
            self.cookie_id = repo.server_secret(s, COOKIE_SECRET)[:32]

    def user(self, token: object) -> str | None:
        """The user of an unexpired session of an enabled user, else None (also when the database
        cannot be reached: the page goes back to the login form instead of failing)."""
        if not isinstance(token, str) or not token:
            return None
        try:
            with self.reader() as s:
                return repo.login_session_user(s, token)
        except Exception:  # noqa: BLE001 - a lost session is refused cleanly; the reason goes to the log
            log.exception("could not read the login session")
            return None

    def __getitem__(self, token: str) -> str:
        name = self.user(token)
        if name is None:
            raise KeyError("no such session")
        return name

    def __setitem__(self, token: str, user: str) -> None:
        with transaction(self.factory) as s:
            repo.create_login_session(s, token, user, ttl_s=self.ttl_s)

    def __delitem__(self, token: str) -> None:
        with transaction(self.factory) as s:
            if not repo.end_login_session(s, token):
                raise KeyError("no such session")

    def __contains__(self, token: object) -> bool:
        return self.user(token) is not None

    def __iter__(self) -> Iterator[str]:
        return iter(())

    def __len__(self) -> int:
        return 0

    def logout(self, token: object, *, everywhere: bool = True) -> str | None:
        """End the session (with everywhere, all sessions of its user), audited; the user or None."""
        with transaction(self.factory) as s:
            return repo.logout(s, token, everywhere=everywhere)

    def cookie_names(self) -> tuple[str, str]:
        """Gradio's two login cookies (the secure one and the one for plain http)."""
        return f"access-token-{self.cookie_id}", f"access-token-unsecure-{self.cookie_id}"

    def token_of(self, cookies: object) -> str | None:
        """The session token in a request's cookies (a mapping), if any."""
        get = getattr(cookies, "get", None)
        if get is None:
            return None
        for name in self.cookie_names():
            value = get(name)
            if isinstance(value, str) and value:
                return value
        return None


class SessionOwners:
    """session hash -> the user who first used it in this process (thread-safe, bounded)."""

    def __init__(self, max_entries: int = MAX_OWNED_SESSIONS) -> None:
        self.max_entries = max_entries
        self._owners: OrderedDict[str, str] = OrderedDict()
        self._lock = threading.Lock()

    def claim(self, session_hash: str, user: str) -> str:
        """Record `user` as the owner unless the hash has one; returns the owner."""
        with self._lock:
            owner = self._owners.get(session_hash)
            if owner is None:
                self._owners[session_hash] = owner = user
                while len(self._owners) > self.max_entries:
                    self._owners.popitem(last=False)
            else:
                self._owners.move_to_end(session_hash)
            return owner

    def owner(self, session_hash: str) -> str | None:
        with self._lock:
            return self._owners.get(session_hash)
