"""Helpers for the storage tests (imported by tests/conftest.py and the test_storage* files).

PostgreSQL: each test run creates its own database (diffdraft_test_<random>) on the server at
127.0.0.1:5432 and drops it at the end; each test gets its own schema inside it.
SQLite: each test gets a copy of a database file migrated once per run.
"""

from __future__ import annotations

import os
import shutil
import threading
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from sqlalchemy import URL, create_engine, make_url, text
from sqlalchemy.orm import Session, sessionmaker

PG_ADMIN_URL = os.environ.get("DIFFDRAFT_TEST_PG_ADMIN_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres")

# name -> role of the users seed_users() creates; every password is PASSWORD
USERS: dict[str, str] = {"olga": "operator", "alice": "reviewer", "bob": "reviewer", "maya": "manager", "adam": "admin"}
PASSWORD = "correct horse battery"


def postgres_unavailable_reason(admin_url: str = PG_ADMIN_URL) -> str | None:
    """None when the server answers, else why not (for pytest.skip)."""
    engine = create_engine(admin_url, connect_args={"connect_timeout": 3})
    try:
        with engine.connect() as conn:
            conn.execute(text("SELECT 1"))
        return None
    except Exception as e:  # noqa: BLE001 - any failure means "no server to test against"
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        return f"PostgreSQL not reachable at {make_url(admin_url).render_as_string(hide_password=True)}: {first}"
    finally:
        engine.dispose()


def create_pg_database(admin_url: str = PG_ADMIN_URL) -> str:
    """A new, empty database of this run's own; returns its URL."""
    name = f"diffdraft_test_{os.getpid()}_{uuid.uuid4().hex[:10]}"
    engine = create_engine(admin_url, isolation_level="AUTOCOMMIT")
    try:
        with engine.connect() as conn:
            conn.execute(text(f'CREATE DATABASE "{name}"'))
    finally:
        engine.dispose()
    return make_url(admin_url).set(database=name).render_as_string(hide_password=False)


def drop_pg_database(url: str, admin_url: str = PG_ADMIN_URL) -> None:
    name = make_url(url).database
    engine = create_engine(admin_url, isolation_level="AUTOCOMMIT")
    try:
        with engine.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    finally:
        engine.dispose()


def create_pg_schema(database_url: str) -> str:
    """A fresh schema in the run's database; returns a URL whose connections use it."""
    schema = f"t_{uuid.uuid4().hex[:12]}"
    engine = create_engine(database_url, isolation_level="AUTOCOMMIT")
    try:
        with engine.connect() as conn:
            conn.execute(text(f'CREATE SCHEMA "{schema}"'))
    finally:
        engine.dispose()
    url: URL = make_url(database_url)
    return url.update_query_dict({"options": f"-csearch_path={schema}"}).render_as_string(hide_password=False)


def drop_pg_schema(schema_url: str) -> None:
    url = make_url(schema_url)
    schema = str(url.query["options"]).split("=", 1)[1]
    engine = create_engine(url.difference_update_query(["options"]), isolation_level="AUTOCOMMIT")
    try:
        with engine.connect() as conn:
            conn.execute(text(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE'))
    finally:
        engine.dispose()


_template_lock = threading.Lock()
_template_path: Path | None = None


def migrated_sqlite_url(tmp_path: Path, template_dir: Path) -> str:
    """sqlite:/// URL of a fresh, migrated database file in tmp_path (copied from a template)."""
    from storage.migrations import migrate

    global _template_path
    with _template_lock:
        if _template_path is None or not _template_path.exists():
            path = template_dir / "template.sqlite3"
            migrate(f"sqlite:///{path}")  # the engine is disposed: the WAL is checkpointed into the file
            _template_path = path
    target = tmp_path / "diffdraft.sqlite3"
    shutil.copyfile(_template_path, target)
    return f"sqlite:///{target}"


def seed_users(factory: sessionmaker[Session], users: dict[str, str] | None = None) -> None:
    from storage import repository as repo
    from storage.db import transaction

    with transaction(factory) as s:
        for name, role in (users or USERS).items():
            repo.create_user(s, name, role, PASSWORD)


def batches(n: int, sizes: Sequence[int] = (1, 2, 3, 4, 5)) -> list[range]:
    """0..n-1 cut into transactions of 1, 2, 3, 4, 5, 1, 2, ... events: single appends and several
    appends in one transaction both have to keep the chain linear."""
    out, start, k = [], 0, 0
    while start < n:
        size = min(sizes[k % len(sizes)], n - start)
        out.append(range(start, start + size))
        start, k = start + size, k + 1
    return out


def append_worker(url: str, actor: str, role: str, n: int, tag: str, barrier: Any, done: Any) -> None:
    """Process target: connect, wait at the barrier for the others, append n events (one
    transaction each), then put ("ok", n) or ("error", message) on the `done` queue."""
    from storage.audit import append_event
    from storage.db import make_engine, make_session_factory, transaction

    engine = make_engine(url)
    factory = make_session_factory(engine)
    try:
        with factory() as s:
            s.execute(text("SELECT 1"))  # connected before the start signal
        barrier.wait(timeout=120)
        for batch in batches(n):
            with transaction(factory) as s:
                for i in batch:
                    append_event(s, actor, role, "test.append", "worker", f"{tag}-{i}", new={"i": i, "tag": tag})
        done.put(("ok", n))
    except BaseException as e:  # noqa: BLE001 - reported to the test
        done.put(("error", f"{type(e).__name__}: {e}"))
    finally:
        engine.dispose()


def run_appenders(url: str, n_threads: int, per_thread: int, actor: str, role: str) -> list[BaseException]:
    """n_threads threads, released together by a barrier, each appending per_thread events."""
    from storage.audit import append_event
    from storage.db import make_engine, make_session_factory, transaction

    engine = make_engine(url)
    factory = make_session_factory(engine)
    barrier = threading.Barrier(n_threads)
    errors: list[BaseException] = []

    def work(tag: str) -> None:
        try:
            barrier.wait()
            for batch in batches(per_thread):
                with transaction(factory) as s:
                    for i in batch:
                        append_event(s, actor, role, "test.append", "thread", f"{tag}-{i}", new={"i": i, "tag": tag})
        except BaseException as e:  # noqa: BLE001 - reported by the test
            errors.append(e)

    threads = [threading.Thread(target=work, args=(f"t{k}",)) for k in range(n_threads)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    engine.dispose()
    return errors


def object_ids(factory: sessionmaker[Session], action: str = "test.append") -> Sequence[str]:
    from sqlalchemy import select

    from storage.models import AuditEvent

    with reader(factory)() as s:
        return list(s.scalars(select(AuditEvent.object_id).where(AuditEvent.action == action)))


def reader(factory: sessionmaker[Session]) -> sessionmaker[Session]:
    """A factory on the same engine whose sessions only read (no write lock on SQLite)."""
    from storage.db import make_session_factory

    return make_session_factory(factory.kw["bind"], reads_only=True)


def count_rows(factory: sessionmaker[Session], table: Any) -> int:
    """How many rows `table` (a model class) holds, read through a read-only session."""
    from sqlalchemy import func, select

    with reader(factory)() as s:
        return s.scalar(select(func.count()).select_from(table))
