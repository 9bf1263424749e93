"""Alembic environment: uses the connection handed over by storage.migrations.migrate().

Run through alembic's own CLI (`alembic -c ...`), it falls back to storage.db.resolve_url().
"""

from __future__ import annotations

from alembic import context
from sqlalchemy import Connection

from storage.db import make_engine, resolve_url
from storage.models import Base


def _run(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=Base.metadata,
        render_as_batch=connection.dialect.name == "sqlite",
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()


if context.is_offline_mode():
    raise SystemExit("offline (--sql) migrations are not supported: run `python -m storage migrate`")

_connection = context.config.attributes.get("connection")
if _connection is not None:
    _run(_connection)
else:
    _engine = make_engine(context.config.get_main_option("sqlalchemy.url") or resolve_url())
    try:
        with _engine.begin() as _conn:
            _run(_conn)
    finally:
        _engine.dispose()
