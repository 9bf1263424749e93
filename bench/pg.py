"""A fresh PostgreSQL schema for one benchmark run (the benches that start app processes on a
shared database: login, crash_runs, replicas)."""

from __future__ import annotations

import uuid
from typing import Any


def pg_schema(db_url: str) -> tuple[str, Any]:
    """A fresh schema in the PostgreSQL database of db_url: (its URL, a function that drops it)."""
    from sqlalchemy import create_engine, make_url, text

    schema = f"bench_{uuid.uuid4().hex[:10]}"
    engine = create_engine(db_url, isolation_level="AUTOCOMMIT")
    with engine.connect() as conn:
        conn.execute(text(f'CREATE SCHEMA "{schema}"'))

    def drop() -> None:
        with engine.connect() as conn:
            conn.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
        engine.dispose()

    url = make_url(db_url).update_query_dict({"options": f"-csearch_path={schema}"})
    return url.render_as_string(hide_password=False), drop
