"""Login sessions kept in the database, so that every replica of the app (and a restarted one)
knows who a login cookie belongs to.

Part of storage.repository (see its docstring for the glossary); Session first, never commits.
A session is found by the SHA-256 of its token (the random value of the login cookie): the token
itself is never stored, so reading the table gives nobody a way in. A session ends at expires_at,
at logout, when its user is disabled, and when the user's password is set (see accounts).
"""

from __future__ import annotations

import hashlib
from datetime import datetime, timedelta

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from storage.audit import append_event
from storage.errors import NotFound, ValidationError
from storage.models import LoginSession, User, utcnow

MAX_TOKEN_CHARS = 256


def token_hash(token: str) -> str:
    """SHA-256 hex of a session token (tokens are random, 128 bits or more: no key is needed)."""
    return hashlib.sha256(token.encode("utf-8", "surrogatepass")).hexdigest()


def _usable(token: object) -> bool:
    return isinstance(token, str) and 0 < len(token) <= MAX_TOKEN_CHARS


def create_login_session(session: Session, token: str, user_name: str, *, ttl_s: float,
                         now: datetime | None = None) -> LoginSession:
    """Record a new session of `user_name` for ttl_s seconds; expired sessions are removed on the way."""
    if not _usable(token):
        raise ValidationError(f"a session token is 1 to {MAX_TOKEN_CHARS} characters")
    now = now or utcnow()
    user = session.scalar(select(User).where(User.name == user_name))
    if user is None:
        raise NotFound(f"unknown user {user_name!r}")
    session.execute(delete(LoginSession).where(LoginSession.expires_at <= now))
    row = LoginSession(token_hash=token_hash(token), user_id=user.id, created_at=now,
                       expires_at=now + timedelta(seconds=ttl_s))
    session.add(row)
    session.flush()
    return row


def login_session_user(session: Session, token: object, *, now: datetime | None = None) -> str | None:
    """The name of the enabled user whose unexpired session `token` is, else None."""
    if not _usable(token):
        return None
    assert isinstance(token, str)
    now = now or utcnow()
    return session.scalar(
        select(User.name).join(LoginSession, LoginSession.user_id == User.id)
        .where(LoginSession.token_hash == token_hash(token), LoginSession.expires_at > now,
               User.disabled.is_(False))
    )


def end_login_session(session: Session, token: object) -> bool:
    """End one session; False when there was none."""
    if not _usable(token):
        return False
    assert isinstance(token, str)
    gone = session.execute(delete(LoginSession).where(LoginSession.token_hash == token_hash(token)))
    return bool(gone.rowcount)


def end_user_sessions(session: Session, user: User | str, *, keep_token: str | None = None) -> int:
    """End every session of `user` but the one of keep_token; returns how many ended."""
    if isinstance(user, str):
        found = session.scalar(select(User).where(User.name == user))
        if found is None:
            return 0
        user = found
    stmt = delete(LoginSession).where(LoginSession.user_id == user.id)
    if _usable(keep_token):
        assert isinstance(keep_token, str)
        stmt = stmt.where(LoginSession.token_hash != token_hash(keep_token))
    return int(session.execute(stmt).rowcount or 0)


def count_login_sessions(session: Session, user_name: str, *, now: datetime | None = None) -> int:
    """How many unexpired sessions `user_name` has (the admin screen shows it)."""
    now = now or utcnow()
    return len(session.scalars(
        select(LoginSession.token_hash).join(User, LoginSession.user_id == User.id)
        .where(User.name == user_name, LoginSession.expires_at > now)
    ).all())


def logout(session: Session, token: object, *, everywhere: bool = True) -> str | None:
    """End the session of `token` (and, with everywhere, every other session of its user, as
    Gradio's /logout does by default); audited as logout. The user's name, or None for no session."""
    if not _usable(token):
        return None
    assert isinstance(token, str)
    user = session.scalar(select(User).join(LoginSession, LoginSession.user_id == User.id)
                          .where(LoginSession.token_hash == token_hash(token)))
    if user is None:
        return None
    ended = end_user_sessions(session, user) if everywhere else int(end_login_session(session, token))
    append_event(session, user.name, user.role, "logout", "user", user.name, new={"sessions_ended": ended})
    return user.name
