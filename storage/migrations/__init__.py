"""Alembic migrations, configured from code (no alembic.ini needed in the working directory).

    migrate(url)            upgrade to head; called by `python -m storage migrate` and at app start
    require_current(engine) raise StorageError unless the schema is at head
"""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Connection, Engine, text

from storage.db import describe_url, make_engine
from storage.errors import StorageError

MIGRATIONS_DIR = Path(__file__).resolve().parent
MIGRATE_LOCK_KEY = 0x0D1FFD7B  # pg_advisory_xact_lock key: one migrating process at a time


def alembic_config(connection: Connection | None = None) -> Config:
    """An alembic Config pointing at this folder; `connection` is used by env.py when given."""
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    cfg.attributes["connection"] = connection
    return cfg


def head_revision() -> str:
    head = ScriptDirectory.from_config(alembic_config()).get_current_head()
    assert head is not None
    return head


def revisions() -> list[str]:
    """Every revision id, oldest first."""
    script = ScriptDirectory.from_config(alembic_config())
    return [r.revision for r in reversed(list(script.walk_revisions()))]


def current_revision(engine: Engine) -> str | None:
    with engine.connect() as conn:
        return MigrationContext.configure(conn).get_current_revision()


def migrate(url: str | Engine, revision: str = "head") -> str | None:
    """Upgrade the database to `revision` (default head) in one transaction; returns the new revision.

    Safe to call from several processes at once: on PostgreSQL an advisory lock serialises them,
    on SQLite the transaction begins IMMEDIATE.
    """
    known = revisions()
    if revision != "head" and revision not in known:  # alembic would fail on it with a traceback
        raise StorageError(f"unknown schema revision {revision!r}: use head or one of {', '.join(known)}")
    engine = make_engine(url) if isinstance(url, str) else url
    try:
        with engine.begin() as conn:
            if conn.dialect.name == "postgresql":
                conn.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": MIGRATE_LOCK_KEY})
            command.upgrade(alembic_config(conn), revision)
        return current_revision(engine)
    finally:
        if isinstance(url, str):
            engine.dispose()


def require_current(engine: Engine) -> None:
    """Refuse to work on a database whose schema is missing or older than this code."""
    current, head = current_revision(engine), head_revision()
    if current != head:
        raise StorageError(
            f"the database {describe_url(engine.url)} is at schema {current or '(empty)'}, this code needs "
            f"{head}: run `python -m storage migrate --db-url URL` first"
        )
