"""python -m storage.users: add / list / set-role / disable / enable / passwd, passwords only
from a prompt or the environment, every change audited."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from sqlalchemy import select

from storage import repository as repo
from storage.audit import verify_chain
from storage.db import make_engine, make_session_factory
from storage.models import AuditEvent
from storage.users import build_parser, main

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def url(tmp_path, cheap_argon2) -> str:
    return f"sqlite:///{tmp_path / 'users.sqlite3'}"  # not migrated: the CLI bootstraps it


def _session(url: str):
    engine = make_engine(url)
    return engine, make_session_factory(engine, reads_only=True)()


def test_add_list_set_role_disable_enable(url, capsys, monkeypatch):
    monkeypatch.setenv("DIFFDRAFT_PASSWORD", "first admin password")
    assert main(["add", "root.admin", "--role", "admin", "--db-url", url]) == 0
    monkeypatch.setenv("OLGA_PW", "olga's password")
    assert main(["add", "olga", "--role", "operator", "--password-env", "OLGA_PW", "--db-url", url,
                 "--actor", "root.admin", "--reason", "new starter"]) == 0
    assert main(["set-role", "olga", "reviewer", "--reason", "trained", "--db-url", url, "--actor", "root.admin"]) == 0
    assert main(["disable", "olga", "--reason", "on leave", "--db-url", url]) == 0
    capsys.readouterr()
    assert main(["list", "--db-url", url]) == 0
    listing = capsys.readouterr().out
    assert "olga" in listing and "reviewer" in listing and "disabled" in listing and "root.admin" in listing
    assert main(["enable", "olga", "--reason", "back", "--db-url", url]) == 0

    engine, s = _session(url)
    with s:
        olga = repo.get_user(s, "olga")
        assert (olga.role, olga.disabled) == ("reviewer", False)
        assert repo.verify_password(olga.password_hash, "olga's password")
        events = [(e.actor, e.action, e.reason) for e in s.scalars(select(AuditEvent).order_by(AuditEvent.seq))]
        assert events == [
            ("system", "user.create", None),
            ("root.admin", "user.create", "new starter"),
            ("root.admin", "user.set_role", "trained"),
            ("system", "user.disable", "on leave"),
            ("system", "user.enable", "back"),
        ]
        assert verify_chain(s).ok
    engine.dispose()


def test_password_comes_from_a_prompt_never_the_command_line(url, capsys, monkeypatch):
    monkeypatch.delenv("DIFFDRAFT_PASSWORD", raising=False)
    with pytest.raises(SystemExit) as info:
        build_parser().parse_args(["add", "eve", "--role", "operator", "--password", "hunter22"])
    assert info.value.code == 2
    answers = iter(["typed password", "typed password"])
    assert main(["add", "eve", "--role", "operator", "--db-url", url], prompt=lambda _: next(answers)) == 0
    answers = iter(["one password", "another one"])
    assert main(["passwd", "eve", "--db-url", url], prompt=lambda _: next(answers)) == 2
    assert "differ" in capsys.readouterr().err
    answers = iter(["new password!", "new password!"])
    assert main(["passwd", "eve", "--db-url", url], prompt=lambda _: next(answers)) == 0
    engine, s = _session(url)
    with s:
        user = repo.get_user(s, "eve")
        assert repo.verify_password(user.password_hash, "new password!")
        assert all("password" not in (e.new_value or "") for e in s.scalars(select(AuditEvent)))
    engine.dispose()
    assert main(["add", "mia", "--role", "operator", "--password-env", "UNSET_VAR_X", "--db-url", url]) == 2
    assert "$UNSET_VAR_X is not set" in capsys.readouterr().err


@pytest.mark.parametrize(
    "argv, words",
    [
        (["set-role", "ghost", "reviewer", "--reason", "r"], "unknown user 'ghost'"),
        (["disable", "ghost", "--reason", "r"], "unknown user 'ghost'"),
        (["disable", "ann", "--reason", " "], "reason is empty"),
        (["set-role", "ann", "operator", "--reason", "r"], "already has role"),
        (["add", "ann", "--role", "operator"], "already exists"),
        (["add", "bad name", "--role", "operator"], "may hold only"),
        (["set-role", "ann", "reviewer", "--reason", "r", "--actor", "ann"], "may not manage users"),
        (["set-role", "ann", "reviewer", "--reason", "r", "--actor", "nobody"], "unknown user 'nobody'"),
        (["add", "zoe", "--role", "operator", "--password-env", "SPACES_PW"], "8 characters long; at least 12"),
        (["add", "zoe", "--role", "operator", "--password-env", "BLANK_PW"], "only spaces"),
        (["passwd", "ann", "--password-env", "SPACES_PW"], "at least 12"),
        (["add", "z" * 65, "--role", "operator"], "65 characters long; at most 64"),
    ],
)
def test_bad_requests_exit_2_with_a_message_and_change_nothing(url, capsys, monkeypatch, argv, words):
    monkeypatch.setenv("DIFFDRAFT_PASSWORD", "ann's password")
    monkeypatch.setenv("SPACES_PW", " " * 8)
    monkeypatch.setenv("BLANK_PW", " " * 12)
    assert main(["add", "ann", "--role", "operator", "--db-url", url]) == 0
    capsys.readouterr()
    assert main([*argv, "--db-url", url]) == 2
    assert words in capsys.readouterr().err
    engine, s = _session(url)
    with s:
        assert [u.name for u in repo.list_users(s)] == ["ann"] and repo.get_user(s, "ann").role == "operator"
        assert len(list(s.scalars(select(AuditEvent)))) == 1
    engine.dispose()


def test_unknown_role_is_refused_by_the_parser(url, capsys):
    with pytest.raises(SystemExit) as info:
        main(["add", "zed", "--role", "wizard", "--db-url", url])
    assert info.value.code == 2 and "invalid choice: 'wizard'" in capsys.readouterr().err


def test_runs_as_a_module(tmp_path):
    url = f"sqlite:///{tmp_path / 'm.sqlite3'}"
    env = {**os.environ, "DIFFDRAFT_PASSWORD": "module password"}
    add = subprocess.run([sys.executable, "-m", "storage.users", "add", "kim", "--role", "manager", "--db-url", url],
                         cwd=ROOT, env=env, capture_output=True, text=True, timeout=90)
    assert add.returncode == 0, add.stderr
    assert "added kim (manager)" in add.stdout and "module password" not in add.stdout + add.stderr
    engine, s = _session(url)
    with s:
        assert repo.get_user(s, "kim").password_hash.startswith("$argon2id$v=19$m=65536")  # production cost
    engine.dispose()
