"""Shared fixtures. So far only storage's (the helpers live in tests/storage_fixtures.py):

  postgres_url   session: URL of a PostgreSQL database this test run created (dropped at the end);
                 skips with the reason when the server at 127.0.0.1:5432 is absent
  pg_url         a fresh, migrated schema inside it, for one test
  sqlite_url     a fresh, migrated SQLite file in tmp_path
  db_url         parametrised: sqlite, and postgres (marked `postgres`)
  factory        engine + session factory on db_url, with the users of storage_fixtures.USERS
  cheap_argon2   Argon2id with tiny cost parameters (production keeps argon2-cffi's defaults)
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

    old = repository._hasher
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
