"""Shared fixtures. So far only storage's (the helpers live in tests/storage_fixtures.py):

  postgres_url   session: URL of a PostgreSQL database this test run created (dropped at the end);
                 skips with the reason when the server at 127.0.0.1:5432 is absent
  pg_url         a fresh, migrated schema inside it, for one test
  sqlite_url     a fresh, migrated SQLite file in tmp_path
  db_url         parametrised: sqlite, and postgres (marked `postgres`)
  factory        engine + session factory on db_url, with the users of storage_fixtures.USERS
  cheap_argon2   Argon2id with tiny cost parameters (production keeps argon2-cffi's defaults)
  draft          on `factory`: a template, a document from it (by olga) and a run with three steps
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from argon2 import PasswordHasher
from sqlalchemy.orm import Session, sessionmaker

import storage_fixtures as sf


@pytest.fixture
def cheap_argon2() -> Iterator[None]:
    from storage import repository
    from storage.repository import accounts

    old = accounts._hasher
    repository.set_password_hasher(PasswordHasher(time_cost=1, memory_cost=8, parallelism=1))
    yield
    repository.set_password_hasher(old)


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    reason = sf.postgres_unavailable_reason()
    if reason is not None:
        pytest.skip(reason)
    url = sf.create_pg_database()
    try:
        yield url
    finally:
        sf.drop_pg_database(url)


@pytest.fixture
def pg_url(postgres_url: str) -> Iterator[str]:
    from storage.migrations import migrate

    url = sf.create_pg_schema(postgres_url)
    migrate(url)
    yield url
    sf.drop_pg_schema(url)


@pytest.fixture
def sqlite_url(tmp_path, tmp_path_factory) -> str:
    return sf.migrated_sqlite_url(tmp_path, tmp_path_factory.getbasetemp())


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def db_url(request: pytest.FixtureRequest) -> str:
    return request.getfixturevalue("sqlite_url" if request.param == "sqlite" else "pg_url")


@pytest.fixture
def factory(db_url: str, cheap_argon2: None) -> Iterator[sessionmaker[Session]]:
    from storage.db import make_engine, make_session_factory

    engine = make_engine(db_url)
    f = make_session_factory(engine)
    sf.seed_users(f)
    yield f
    engine.dispose()


@pytest.fixture
def draft(factory):
    """A template, a document from it and a run with three steps of 12 tokens."""
    from storage import repository as repo
    from storage.db import transaction

    with transaction(factory) as s:
        t = repo.create_template(s, actor="maya", name="inspection", body="Finding: {{slot:12}}")
        d = repo.create_document(s, actor="olga", title="Pump 7", template_id=t.id, text="The pump leaks oil.")
        r = repo.create_run(s, document_id=d.id, actor="olga", model_id="sfdlm-tiny", model_checksum="ab" * 32,
                            seed=7, sampler_settings={"steps": 3, "schedule": "cosine"})
        for i in range(3):
            repo.record_step(s, r.id, i, [100 + i] * 12, [0.25 * i] * 12, t=1 - i / 3)
        return {"template": t.id, "document": d.id, "run": r.id}


# ---------------------------------------------------------------- app fixtures (added by the app issue)
# tiny_model_dir  session: a freshly built tiny random model folder (engine.tiny), shared by the run
# app_services    app.services.Services on a fresh migrated SQLite file in tmp_path, with the users of
#                 storage_fixtures.USERS (password storage_fixtures.PASSWORD), no login slowing
# live_app        the app launched in-process on a free 127.0.0.1 port: (url, services); shut down after


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory):
    from engine.tiny import build_tiny

    folder = tmp_path_factory.mktemp("tiny_model") / "tiny"
    build_tiny(folder)
    return folder


@pytest.fixture
def app_services(tiny_model_dir, tmp_path, cheap_argon2):
    from app.services import build_services

    svc = build_services(tiny_model_dir, data_dir=tmp_path / "data", login_delay_s=0.0)
    sf.seed_users(svc.factory)
    yield svc
    svc.close()


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def live_app(app_services, monkeypatch):
    import os

    monkeypatch.setenv("GRADIO_ANALYTICS_ENABLED", "False")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost," + os.environ.get("NO_PROXY", ""))
    from app.ui import build_ui, launch_kwargs

    app_services.step_delay_s = 0.15  # long enough to act on a run while it streams
    demo = build_ui(app_services)
    demo.queue()
    port = _free_port()
    demo.launch(prevent_thread_lock=True, **launch_kwargs(app_services, port=port))
    try:
        yield f"http://127.0.0.1:{port}/", app_services
    finally:
        demo.close()
