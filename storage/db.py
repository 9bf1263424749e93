"""Engine and session factory: SQLite by default, PostgreSQL for a shared deployment.

Glossary
  url       SQLAlchemy URL: sqlite:///PATH (embedded default) or postgresql+psycopg://... (shared)
  data_dir  the folder the app keeps its files in; the default SQLite file lives there
  factory   a sessionmaker; callers open sessions from it and commit them (repository never does)

SQLite settings (set on every new connection, see docs/STORAGE.md for why):
  journal_mode=WAL, synchronous=FULL, foreign_keys=ON, busy_timeout, and every transaction
  begins with BEGIN IMMEDIATE (BEGIN DEFERRED for engines made by read_only()).

Database errors that a person can act on (locked, read-only, unreachable) are rewritten into
storage.errors classes by a handle_error hook, so every caller gets the same clear message.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.exc import ArgumentError
from sqlalchemy.engine import URL, make_url
from sqlalchemy.engine.interfaces import ExceptionContext
from sqlalchemy.orm import Session, sessionmaker

from storage.errors import (
    AuditRefused,
    DatabaseLocked,
    DatabaseReadOnly,
    DatabaseUnavailable,
    StorageError,
)

DATABASE_URL_ENV = "DATABASE_URL"
DATA_DIR_ENV = "DIFFDRAFT_DATA_DIR"
DEFAULT_DATA_DIR = "data"
DEFAULT_DB_FILENAME = "diffdraft.sqlite3"
DEFAULT_BUSY_TIMEOUT_S = 10.0
_BEGIN_OPTION = "diffdraft_sqlite_begin"  # execution option: "IMMEDIATE" (default) or "DEFERRED"


def default_sqlite_url(data_dir: str | os.PathLike[str]) -> str:
    """The embedded default: DATA_DIR/diffdraft.sqlite3 (the folder is created if missing)."""
    try:
        folder = Path(data_dir).expanduser().resolve()
        folder.mkdir(parents=True, exist_ok=True)
    except (OSError, ValueError) as e:  # ValueError: a NUL in the name
        why = getattr(e, "strerror", None) or e
        raise StorageError(f"cannot use the data folder {os.fspath(data_dir)!r}: {why}") from e
    return f"sqlite:///{folder / DEFAULT_DB_FILENAME}"


def normalise_url(url: str) -> str:
    """Accept postgres:// and postgresql:// and point them at the psycopg (v3) driver."""
    for prefix in ("postgres://", "postgresql://"):
        if url.startswith(prefix):
            return "postgresql+psycopg://" + url[len(prefix):]
    return url


def resolve_url(db_url: str | None = None, data_dir: str | os.PathLike[str] | None = None) -> str:
    """The URL to use: db_url, else $DATABASE_URL, else SQLite under data_dir ($DIFFDRAFT_DATA_DIR, ./data)."""
    if db_url:
        return normalise_url(db_url)
    env = os.environ.get(DATABASE_URL_ENV)
    if env:
        return normalise_url(env)
    folder = data_dir if data_dir is not None else os.environ.get(DATA_DIR_ENV, DEFAULT_DATA_DIR)
    return default_sqlite_url(folder)


def describe_url(url: str | URL) -> str:
    """The URL without its password, for messages (a SQLite path is shown as written)."""
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        query = "&".join(f"{k}={v}" for k, v in parsed.query.items())
        return f"sqlite:///{parsed.database or ''}" + (f"?{query}" if query else "")
    return parsed.render_as_string(hide_password=True)


def is_sqlite(bind: Engine | Session | Any) -> bool:
    """True when the engine (or a session's bind) talks to SQLite."""
    engine = bind.get_bind() if isinstance(bind, Session) else bind
    return engine.dialect.name == "sqlite"


def make_engine(url: str, *, busy_timeout_s: float = DEFAULT_BUSY_TIMEOUT_S, echo: bool = False) -> Engine:
    """An engine with the settings this project relies on (see the module docstring)."""
    url = normalise_url(url)
    try:
        parsed = make_url(url)
        return _make_engine(url, parsed, busy_timeout_s, echo)
    except ArgumentError as e:  # a URL that does not parse, or names a driver that is not installed
        # the URL itself is not repeated: it may hold a password
        raise StorageError("cannot read the database URL: write sqlite:///FILE or "
                           "postgresql+psycopg://USER@HOST/DB") from e


def _make_engine(url: str, parsed: URL, busy_timeout_s: float, echo: bool) -> Engine:
    if parsed.get_backend_name() == "sqlite":
        engine = create_engine(url, echo=echo, connect_args={"timeout": busy_timeout_s})
        _install_sqlite_settings(engine, busy_timeout_s)
    elif parsed.get_backend_name() == "postgresql":
        if parsed.get_driver_name() not in ("psycopg", ""):
            raise StorageError(f"use the psycopg driver (postgresql+psycopg://...), not {parsed.drivername}")
        engine = create_engine(
            url, echo=echo, pool_pre_ping=True,
            connect_args={"connect_timeout": max(1, int(busy_timeout_s)), "application_name": "diffdraft"},
        )
    else:
        raise StorageError(f"unsupported database URL {describe_url(parsed)}: use sqlite:/// or postgresql+psycopg://")
    _install_error_translation(engine, busy_timeout_s)
    return engine


def read_only(engine: Engine) -> Engine:
    """The same engine, but SQLite transactions begin DEFERRED so readers never wait for writers."""
    return engine.execution_options(**{_BEGIN_OPTION: "DEFERRED"})


def make_session_factory(engine: Engine, *, reads_only: bool = False) -> sessionmaker[Session]:
    """Sessions for the caller to open; objects stay readable after commit (expire_on_commit=False).

    On SQLite a session of the default factory holds the write lock from its first statement to
    its commit (BEGIN IMMEDIATE), so keep write sessions short; pages that only read should use
    a reads_only=True factory, whose sessions never wait for writers nor block them.
    """
    return sessionmaker(read_only(engine) if reads_only else engine, expire_on_commit=False)


@contextmanager
def transaction(factory: sessionmaker[Session]) -> Iterator[Session]:
    """`with transaction(factory) as s:` commits at the end of the block, rolls back on error."""
    with factory() as session, session.begin():
        yield session


def _install_sqlite_settings(engine: Engine, busy_timeout_s: float) -> None:
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn: Any, _record: Any) -> None:
        # Take BEGIN away from the sqlite3 module; the "begin" hook below emits our own.
        dbapi_conn.isolation_level = None
        cur = dbapi_conn.cursor()
        try:
            try:
                cur.execute("PRAGMA journal_mode=WAL")
            except Exception:  # a read-only file that is not yet in WAL: reads still work
                pass
            cur.execute("PRAGMA synchronous=FULL")
            cur.execute("PRAGMA foreign_keys=ON")
            cur.execute(f"PRAGMA busy_timeout={int(busy_timeout_s * 1000)}")
        finally:
            cur.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Any) -> None:
        mode = conn.get_execution_options().get(_BEGIN_OPTION, "IMMEDIATE")
        conn.exec_driver_sql(f"BEGIN {mode}")


def _install_error_translation(engine: Engine, busy_timeout_s: float) -> None:
    where = describe_url(engine.url)

    @event.listens_for(engine, "handle_error")
    def _translate(ctx: ExceptionContext) -> None:
        if ctx.is_pre_ping:
            return
        orig = ctx.original_exception
        msg = str(orig)
        low = msg.lower()
        if "append-only" in low:
            raise AuditRefused(f"the database refused it: {msg.strip().splitlines()[0]}") from orig
        if ctx.dialect.name == "sqlite":
            if "database is locked" in low or "database table is locked" in low:
                raise DatabaseLocked(
                    f"the database {where} is locked: another writer held it for more than "
                    f"{busy_timeout_s:g} s. Nothing was saved; try again."
                ) from orig
            if "readonly" in low or "read-only" in low:
                raise DatabaseReadOnly(
                    f"the database {where} is read-only (file or folder permissions, or opened "
                    "read-only). Nothing was saved."
                ) from orig
            if "unable to open database file" in low or "disk i/o error" in low:
                raise DatabaseUnavailable(
                    f"cannot open the database {where} ({msg}): check that the file and its folder "
                    "exist and are readable."
                ) from orig
            return
        sqlstate = getattr(orig, "sqlstate", None)
        if sqlstate == "25006":
            raise DatabaseReadOnly(f"the database {where} is read-only. Nothing was saved.") from orig
        if sqlstate in ("55P03", "40P01"):
            raise DatabaseLocked(f"the database {where} is busy ({msg.strip()}). Nothing was saved; try again.") from orig
        if ctx.is_disconnect or (sqlstate is None and type(orig).__name__ == "OperationalError"):
            first = msg.strip().splitlines()[0] if msg.strip() else type(orig).__name__
            raise DatabaseUnavailable(f"cannot reach the database {where}: {first}") from orig
