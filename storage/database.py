"""Opening the database at app start: the URL, the engine, the schema brought to head (or checked),
and the two session factories the app keeps for its lifetime.

Its own module because it needs both storage.db (engines, sessions) and storage.migrations
(which itself builds on storage.db).
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from storage.db import DEFAULT_BUSY_TIMEOUT_S, make_engine, make_session_factory, resolve_url
from storage.migrations import migrate as run_migrations
from storage.migrations import require_current


@dataclass(frozen=True)
class Database:
    """What the app keeps for its lifetime: the engine and two session factories."""

    url: str
    engine: Engine
    sessions: sessionmaker[Session]  # write transactions (BEGIN IMMEDIATE on SQLite)
    reads: sessionmaker[Session]  # read-only pages: never wait for writers

    def dispose(self) -> None:
        self.engine.dispose()


def open_database(db_url: str | None = None, data_dir: str | os.PathLike[str] | None = None, *,
                  migrate: bool = True, busy_timeout_s: float = DEFAULT_BUSY_TIMEOUT_S) -> Database:
    """App start: resolve the URL (see resolve_url), make the engine, bring the schema to head."""
    url = resolve_url(db_url, data_dir)
    engine = make_engine(url, busy_timeout_s=busy_timeout_s)
    try:
        if migrate:
            run_migrations(engine)
        else:
            require_current(engine)
    except BaseException:
        engine.dispose()
        raise
    return Database(url, engine, make_session_factory(engine), make_session_factory(engine, reads_only=True))
