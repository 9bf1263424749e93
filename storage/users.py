"""Manage users from the shell. Passwords come from a prompt or an environment variable, never
from the command line (where `ps` and shell history would show them).

    python -m storage.users add NAME --role ROLE [--password-env VAR]
    python -m storage.users list
    python -m storage.users set-role NAME ROLE --reason TEXT
    python -m storage.users disable NAME --reason TEXT
    python -m storage.users enable NAME --reason TEXT
    python -m storage.users passwd NAME [--password-env VAR]
Every change is an audit event by --actor (an admin), or by "system" when no --actor is given.
The database is migrated first, so `add` also bootstraps a fresh install.
"""

from __future__ import annotations

import argparse
import getpass
import os
import sys
from collections.abc import Callable, Sequence

from storage import repository as repo
from storage.audit import add_db_args
from storage.cli import Parser, fail
from storage.errors import StorageError, ValidationError
from storage.models import ROLES
from storage.validate import SYSTEM_ACTOR

DEFAULT_PASSWORD_ENV = "DIFFDRAFT_PASSWORD"


def read_password(env_var: str | None, *, prompt: Callable[[str], str] = getpass.getpass) -> str:
    """From $env_var when it is set (and non-empty), else asked twice on the terminal."""
    name = env_var or DEFAULT_PASSWORD_ENV
    value = os.environ.get(name)
    if value:
        return value
    if env_var:
        raise ValidationError(f"${env_var} is not set")
    if not sys.stdin.isatty() and prompt is getpass.getpass:
        raise ValidationError(f"no terminal to ask for the password: set ${DEFAULT_PASSWORD_ENV} or --password-env VAR")
    first = prompt("password: ")
    if prompt("password again: ") != first:
        raise ValidationError("the two passwords differ")
    return first


def build_parser() -> argparse.ArgumentParser:
    # allow_abbrev=False: "--password SECRET" must be an error, not an abbreviation of --password-env
    p = Parser(prog="python -m storage.users", description="Manage DiffDraft users and roles.",
                                allow_abbrev=False)
    sub = p.add_subparsers(dest="command", required=True)

    def command(name: str, help_: str) -> argparse.ArgumentParser:
        c = sub.add_parser(name, help=help_, description=help_, allow_abbrev=False)
        add_db_args(c)
        c.add_argument("--actor", default=SYSTEM_ACTOR,
                       help="admin recorded as doing this in the audit trail (default: system)")
        return c

    c = command("add", "create a user (password from $DIFFDRAFT_PASSWORD, --password-env VAR, or a prompt)")
    c.add_argument("name", help="login name: letters, digits, _ . @ -")
    c.add_argument("--role", required=True, choices=ROLES, help="what the user may do")
    c.add_argument("--password-env", metavar="VAR", help="read the password from this environment variable")
    c.add_argument("--reason", help="why (optional)")
    command("list", "list users with role, state and failed logins")
    c = command("set-role", "change a user's role")
    c.add_argument("name", help="user name")
    c.add_argument("role", choices=ROLES, help="new role")
    c.add_argument("--reason", required=True, help="why (recorded in the audit trail)")
    for name, help_ in (("disable", "stop a user from logging in (the user and their history stay)"),
                        ("enable", "let a disabled user log in again")):
        c = command(name, help_)
        c.add_argument("name", help="user name")
        c.add_argument("--reason", required=True, help="why (recorded in the audit trail)")
    c = command("passwd", "set a user's password")
    c.add_argument("name", help="user name")
    c.add_argument("--password-env", metavar="VAR", help="read the password from this environment variable")
    return p


def main(argv: Sequence[str] | None = None, *, prompt: Callable[[str], str] = getpass.getpass) -> int:
    from storage.db import make_engine, make_session_factory, resolve_url, transaction
    from storage.migrations import migrate

    args = build_parser().parse_args(argv)
    try:
        engine = make_engine(resolve_url(args.db_url, args.data_dir))
        try:
            migrate(engine)
            with transaction(make_session_factory(engine)) as s:
                if args.command == "add":
                    password = read_password(args.password_env, prompt=prompt)
                    user = repo.create_user(s, args.name, args.role, password, actor=args.actor, reason=args.reason)
                    message = f"added {user.name} ({user.role})"
                elif args.command == "list":
                    lines = [f"{'name':<24} {'role':<9} {'state':<8} {'failed':>6}  last login (UTC)"]
                    for u in repo.list_users(s):
                        last = u.last_login_at.strftime("%Y-%m-%d %H:%M") if u.last_login_at else "-"
                        state = "disabled" if u.disabled else "active"
                        lines.append(f"{u.name:<24} {u.role:<9} {state:<8} {u.failed_logins:>6}  {last}")
                    message = "\n".join(lines)
                elif args.command == "set-role":
                    user = repo.set_role(s, args.name, args.role, actor=args.actor, reason=args.reason)
                    message = f"{user.name} is now {user.role}"
                elif args.command in ("disable", "enable"):
                    change = repo.disable_user if args.command == "disable" else repo.enable_user
                    user = change(s, args.name, actor=args.actor, reason=args.reason)
                    message = f"{user.name} is {'disabled' if user.disabled else 'enabled'}"
                else:
                    password = read_password(args.password_env, prompt=prompt)
                    user = repo.set_password(s, args.name, password, actor=args.actor)
                    message = f"password of {user.name} changed"
        finally:
            engine.dispose()
    except StorageError as e:
        return fail(str(e))
    print(message)
    return 0


if __name__ == "__main__":
    sys.exit(main())
