"""`python -m storage migrate [--db-url URL]`: bring the database schema up to date.

Also `python -m storage current` prints the schema revision the database is at.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

from storage.audit import add_db_args
from storage.cli import Parser, fail
from storage.db import describe_url, make_engine, resolve_url
from storage.errors import StorageError
from storage.migrations import current_revision, head_revision, migrate


def main(argv: Sequence[str] | None = None) -> int:
    p = Parser(prog="python -m storage", description="DiffDraft database maintenance.")
    sub = p.add_subparsers(dest="command", required=True)
    m = sub.add_parser("migrate", help="upgrade the schema to the newest revision (safe to repeat)")
    add_db_args(m)
    m.add_argument("--revision", default="head", help="target revision (default: head)")
    c = sub.add_parser("current", help="print the database's schema revision and the newest one")
    add_db_args(c)
    args = p.parse_args(argv)
    try:
        url = resolve_url(args.db_url, args.data_dir)
        engine = make_engine(url)
        try:
            if args.command == "migrate":
                before = current_revision(engine)
                after = migrate(engine, args.revision)
                print(f"{describe_url(url)}: schema {before or '(empty)'} -> {after}")
            else:
                print(f"{describe_url(url)}: schema {current_revision(engine) or '(empty)'}, newest {head_revision()}")
        finally:
            engine.dispose()
    except StorageError as e:
        return fail(str(e))
    return 0


if __name__ == "__main__":
    sys.exit(main())
