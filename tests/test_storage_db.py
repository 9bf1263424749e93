"""db.py and migrations: SQLite settings, URL choice, clear errors for a locked, read-only or
missing database (with nothing half-written), and the alembic schema matching the models."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
import threading
from datetime import datetime, timezone
from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import func, select, text

import storage_fixtures as sf
from storage import repository as repo
from storage.audit import verify_chain
from storage.database import open_database
from storage.db import (
    default_sqlite_url,
    make_engine,
    make_session_factory,
    normalise_url,
    resolve_url,
    transaction,
)
from storage.errors import DatabaseLocked, DatabaseReadOnly, DatabaseUnavailable, StorageError
from storage.migrations import current_revision, head_revision, migrate, require_current
from storage.models import AuditEvent, Base, User

ROOT = Path(__file__).resolve().parent.parent


def _counts(url: str) -> tuple[int, int]:
    engine = make_engine(url)
    try:
        with make_session_factory(engine, reads_only=True)() as s:
            return (s.scalar(select(func.count()).select_from(User)),
                    s.scalar(select(func.count()).select_from(AuditEvent)))
    finally:
        engine.dispose()


def test_sqlite_settings(sqlite_url):
    engine = make_engine(sqlite_url, busy_timeout_s=2.5)
    with engine.connect() as conn:
        pragma = lambda name: conn.exec_driver_sql(f"PRAGMA {name}").scalar()  # noqa: E731
        assert pragma("journal_mode") == "wal"
        assert pragma("synchronous") == 2  # FULL
        assert pragma("foreign_keys") == 1
        assert pragma("busy_timeout") == 2500
    engine.dispose()


def test_write_sessions_begin_immediately_and_readers_do_not_wait(sqlite_url, cheap_argon2):
    engine = make_engine(sqlite_url)
    path = sqlite_url.removeprefix("sqlite:///")
    with make_session_factory(engine)() as s:
        s.execute(select(1))  # a write session's first statement takes the write lock
        other = sqlite3.connect(path, timeout=0.05, isolation_level=None)
        with pytest.raises(sqlite3.OperationalError, match="locked"):
            other.execute("BEGIN IMMEDIATE")
        other.close()
        with make_session_factory(engine, reads_only=True)() as r:  # readers still read
            assert r.scalar(select(func.count()).select_from(User)) == 0
    other = sqlite3.connect(path, timeout=0.05, isolation_level=None)
    other.execute("BEGIN IMMEDIATE")  # released at the end of the session
    other.execute("ROLLBACK")
    other.close()
    engine.dispose()


def test_url_resolution(tmp_path, monkeypatch):
    monkeypatch.delenv("DATABASE_URL", raising=False)
    monkeypatch.delenv("DIFFDRAFT_DATA_DIR", raising=False)
    url = default_sqlite_url(tmp_path / "new" / "data")
    assert url == f"sqlite:///{tmp_path / 'new' / 'data' / 'diffdraft.sqlite3'}" and (tmp_path / "new" / "data").is_dir()
    assert resolve_url(None, tmp_path) == default_sqlite_url(tmp_path)
    assert resolve_url("postgres://u@h/db") == "postgresql+psycopg://u@h/db"
    monkeypatch.setenv("DIFFDRAFT_DATA_DIR", str(tmp_path / "env"))
    assert resolve_url() == default_sqlite_url(tmp_path / "env")
    monkeypatch.setenv("DATABASE_URL", "postgresql://u@h:5432/db")
    assert resolve_url() == "postgresql+psycopg://u@h:5432/db"
    assert resolve_url("sqlite:///x.db") == "sqlite:///x.db"  # an explicit URL wins
    assert normalise_url("sqlite:///a") == "sqlite:///a"
    with pytest.raises(StorageError, match="unsupported database URL"):
        make_engine("mysql://u@h/db")
    with pytest.raises(StorageError, match="psycopg driver"):
        make_engine("postgresql+psycopg2://u@h/db")


def test_locked_database_gives_a_clear_error_and_no_partial_rows(sqlite_url, cheap_argon2):
    path = sqlite_url.removeprefix("sqlite:///")
    before = _counts(sqlite_url)
    holder = sqlite3.connect(path, isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")  # another program holds the write lock
    engine = make_engine(sqlite_url, busy_timeout_s=0.2)
    try:
        with pytest.raises(DatabaseLocked, match=r"is locked: another writer held it for more than 0.2 s\. "
                                                  r"Nothing was saved"):
            with transaction(make_session_factory(engine)) as s:
                repo.create_user(s, "carl", "operator", "long enough pw")
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    assert _counts(sqlite_url) == before
    with transaction(make_session_factory(engine)) as s:  # works again once the lock is gone
        repo.create_user(s, "carl", "operator", "long enough pw")
    assert _counts(sqlite_url) == (before[0] + 1, before[1] + 1)
    engine.dispose()


def test_lock_released_while_waiting_lets_the_write_through(sqlite_url, cheap_argon2):
    path = sqlite_url.removeprefix("sqlite:///")
    holder = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    holder.execute("BEGIN IMMEDIATE")
    timer = threading.Timer(0.3, lambda: holder.execute("ROLLBACK"))
    timer.start()
    engine = make_engine(sqlite_url, busy_timeout_s=5)
    with transaction(make_session_factory(engine)) as s:  # waits for the busy timeout, then succeeds
        repo.create_user(s, "carl", "operator", "long enough pw")
    timer.join()
    holder.close()
    engine.dispose()
    assert _counts(sqlite_url)[0] == 1


def test_read_only_database_gives_a_clear_error_and_no_partial_rows(sqlite_url, cheap_argon2):
    path = sqlite_url.removeprefix("sqlite:///")
    before = _counts(sqlite_url)
    ro_url = f"sqlite:///file:{path}?mode=ro&uri=true"  # what a read-only file or mount gives
    engine = make_engine(ro_url)
    try:
        with make_session_factory(engine, reads_only=True)() as s:
            assert verify_chain(s).ok  # reading still works
        with pytest.raises(DatabaseReadOnly, match="is read-only .* Nothing was saved"):
            with transaction(make_session_factory(engine)) as s:
                repo.create_user(s, "carl", "operator", "long enough pw")
    finally:
        engine.dispose()
    assert _counts(sqlite_url) == before


def test_missing_database_folder_and_unreachable_server(tmp_path, cheap_argon2):
    engine = make_engine(f"sqlite:///{tmp_path / 'gone' / 'x.sqlite3'}")
    with pytest.raises(DatabaseUnavailable, match="cannot open the database"):
        with transaction(make_session_factory(engine)) as s:
            s.execute(select(1))
    engine.dispose()
    engine = make_engine("postgresql+psycopg://postgres:secret@127.0.0.1:9/none", busy_timeout_s=2)
    with pytest.raises(DatabaseUnavailable, match="cannot reach the database") as info:
        with transaction(make_session_factory(engine)) as s:
            s.execute(select(1))
    assert "secret" not in str(info.value)
    engine.dispose()


def test_migrations_match_the_models_and_repeat_safely(db_url):
    engine = make_engine(db_url)
    try:
        assert current_revision(engine) == head_revision()
        assert migrate(engine) == head_revision()  # a second run changes nothing
        require_current(engine)
        with engine.connect() as conn:
            diff = compare_metadata(MigrationContext.configure(conn, opts={"compare_type": True}), Base.metadata)
        assert diff == []
    finally:
        engine.dispose()


def test_unmigrated_database_is_refused(tmp_path):
    engine = make_engine(f"sqlite:///{tmp_path / 'empty.sqlite3'}")
    with pytest.raises(StorageError, match="schema \\(empty\\), this code needs"):
        require_current(engine)
    engine.dispose()


def test_migrate_cli(tmp_path):
    url = f"sqlite:///{tmp_path / 'cli.sqlite3'}"
    out = subprocess.run([sys.executable, "-m", "storage", "migrate", "--db-url", url], cwd=ROOT,
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert f"schema (empty) -> {head_revision()}" in out.stdout
    from storage.__main__ import main

    assert main(["migrate", "--db-url", url]) == 0  # again: nothing to do
    engine = make_engine(url)
    with engine.connect() as conn:
        assert conn.execute(text("SELECT seq FROM audit_head")).scalar() == 0
    engine.dispose()


@pytest.mark.postgres
def test_concurrent_migrations_on_postgres(postgres_url):
    url = sf.create_pg_schema(postgres_url)
    errors: list[BaseException] = []

    def run() -> None:
        try:
            migrate(url)
        except BaseException as e:  # noqa: BLE001
            errors.append(e)

    threads = [threading.Thread(target=run) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    engine = make_engine(url)
    assert current_revision(engine) == head_revision()
    engine.dispose()
    sf.drop_pg_schema(url)


def test_storage_does_not_import_engine_or_gradio():
    code = ("import sys, storage.db, storage.models, storage.repository, storage.audit, storage.export, "
            "storage.users, storage.migrations, storage.signoff, storage.__main__; "
            "bad = sorted(m for m in sys.modules if m.split('.')[0] in ('engine', 'gradio', 'torch')); "
            "print(bad); sys.exit(1 if bad else 0)")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stdout + out.stderr


def test_open_database_at_app_start(tmp_path, monkeypatch, cheap_argon2):
    monkeypatch.delenv("DATABASE_URL", raising=False)
    with pytest.raises(StorageError, match="run `python -m storage migrate"):
        open_database(data_dir=tmp_path, migrate=False)
    db = open_database(data_dir=tmp_path)
    try:
        assert db.url == default_sqlite_url(tmp_path) and (tmp_path / "diffdraft.sqlite3").exists()
        with transaction(db.sessions) as s:
            repo.create_user(s, "carl", "operator", "long enough pw")
        with db.reads() as s:
            assert repo.get_user(s, "carl").role == "operator"
    finally:
        db.dispose()


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def empty_db_url(request: pytest.FixtureRequest, tmp_path):
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'old.sqlite3'}"
        return
    url = sf.create_pg_schema(request.getfixturevalue("postgres_url"))
    yield url
    sf.drop_pg_schema(url)


def _rows_at_0001(engine) -> tuple[int, int]:
    """The users of storage_fixtures, a document, a run and its first step, inserted as the 0001 code
    wrote them (the models have columns 0001 lacks, so they cannot write these rows); returns
    (document id, run id)."""
    import sqlalchemy as sa

    from storage.models import UTCDateTime

    now, ts = datetime.now(timezone.utc), UTCDateTime()
    users = sa.table("users", sa.column("name"), sa.column("role"), sa.column("password_hash"), sa.column("disabled"),
                     sa.column("failed_logins"), sa.column("created_at", ts))
    documents = sa.table("documents", sa.column("id"), sa.column("title"), sa.column("text"), sa.column("status"),
                         sa.column("version"), sa.column("created_by_id"), sa.column("created_at", ts),
                         sa.column("updated_by_id"), sa.column("updated_at", ts))
    runs = sa.table("runs", sa.column("id"), sa.column("document_id"), sa.column("model_id"),
                    sa.column("model_checksum"), sa.column("seed"), sa.column("sampler_settings", sa.JSON()),
                    sa.column("status"), sa.column("started_by_id"), sa.column("started_at", ts))
    steps = sa.table("steps", sa.column("run_id"), sa.column("step_index"), sa.column("n_tokens"),
                     sa.column("token_ids", sa.LargeBinary()), sa.column("confidences", sa.LargeBinary()),
                     sa.column("created_at", ts))
    with engine.begin() as conn:
        conn.execute(users.insert(), [{"name": n, "role": r, "password_hash": repo.hash_password(sf.PASSWORD),
                                       "disabled": False, "failed_logins": 0, "created_at": now}
                                      for n, r in sf.USERS.items()])
        olga = conn.scalar(text("SELECT id FROM users WHERE name = 'olga'"))
        conn.execute(documents.insert().values(id=1, title="Pump 7", text="old", status="draft", version=1,
                                               created_by_id=olga, created_at=now, updated_by_id=olga,
                                               updated_at=now))
        conn.execute(runs.insert().values(id=1, document_id=1, model_id="m", model_checksum="c", seed=1,
                                          sampler_settings={}, status="running", started_by_id=olga, started_at=now))
        conn.execute(steps.insert().values(run_id=1, step_index=0, n_tokens=4,
                                           token_ids=repo.encode_token_ids([1, 2, 3, 4]),
                                           confidences=repo.encode_confidences([0.5] * 4), created_at=now))
    return 1, 1


def test_a_database_at_0001_is_upgraded_with_its_rows(empty_db_url, cheap_argon2, capsys):
    """0002 adds pin history, edit token counts and review signatures, 0005 users.must_change_password
    and the login tables; rows made at 0001 stay readable."""
    from storage.__main__ import main

    url = empty_db_url
    assert main(["migrate", "--db-url", url, "--revision", "0001"]) == 0
    engine = make_engine(url)
    try:
        assert current_revision(engine) == "0001"
        factory = make_session_factory(engine)
        doc_id, run_id = _rows_at_0001(engine)
        ts = "2026-11-28 16:11:41"
        with engine.begin() as conn:  # rows as the 0001 code wrote them
            conn.execute(text(
                "INSERT INTO pins (document_id, run_id, step_index, span_start, span_end, text, kind, created_by_id,"
                " created_at) VALUES (:d, :r, 0, 1, 2, 'kept', 'token', 2, :ts),"
                " (:d, :r, 0, 2, 3, 'unpinned', 'token', 2, :ts)"), {"d": doc_id, "r": run_id, "ts": ts})
            conn.execute(text("UPDATE pins SET removed_at = :ts, removed_by_id = 2 WHERE text = 'unpinned'"),
                         {"ts": ts})
            conn.execute(text(
                "INSERT INTO reviews (document_id, document_version, decision, reason, reviewer_id, created_at)"
                " VALUES (:d, 1, 'reject', 'no location', 2, :ts)"), {"d": doc_id, "ts": ts})
        capsys.readouterr()
        assert main(["migrate", "--db-url", url]) == 0
        assert f"schema 0001 -> {head_revision()}" in capsys.readouterr().out
        assert current_revision(engine) == head_revision()
        require_current(engine)
        with engine.connect() as conn:
            assert compare_metadata(MigrationContext.configure(conn, opts={"compare_type": True}), Base.metadata) == []
        with transaction(factory) as s:
            (old,) = repo.list_reviews(s, doc_id)
            assert repo.get_setting(s, repo.ALLOW_SELF_REVIEW) is False  # 0003: no settings row, the default
            assert (old.decision, old.reason, old.signature_meaning, old.signed_by, old.signed_at) == (
                "reject", "no location", None, None, None)
            assert [p.text for p in repo.active_pins(s, run_id=run_id)] == ["kept"]
            (step,) = repo.list_steps(s, run_id)  # 0004: a step of 0001 has no kinds, its run no stored state
            assert (step.token_ids, step.kinds, step.layout) == ([1, 2, 3, 4], None, None)
            assert repo.get_run_state(s, run_id) is None
            repo.update_document(s, doc_id, actor="olga", expected_version=1, status="awaiting_review", text="new")
            repo.record_run_edit(s, document_id=doc_id, actor="alice", run_id=run_id, step_index=0, span_start=0,
                                 span_end=1, old_text="a", new_text="a b c", new_n_tokens=3, reason="longer")
            review = repo.record_review(s, document_id=doc_id, actor="bob", decision="approve", expected_version=2,
                                        signature_meaning="approved as reviewed and correct")
            assert (review.signed_by, review.signature_method) == ("bob", "password re-entry")
        with make_session_factory(engine, reads_only=True)() as s:
            assert [(p.text, p.span_start) for p in repo.active_pins(s, run_id=run_id, include_edits=True)] == [
                ("a b c", 0), ("kept", 3)]
            assert repo.list_reviews(s, doc_id)[1].signed_at is not None
            assert verify_chain(s).ok
    finally:
        engine.dispose()
