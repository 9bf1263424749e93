"""repository: users, passwords and logins, roles and permissions. SQLite and PostgreSQL."""

from __future__ import annotations

import pytest
from sqlalchemy import select

import storage_fixtures as sf
from storage import repository as repo
from storage.repository import accounts
from storage.audit import verify_chain
from storage.db import transaction
from storage.errors import NotFound, PermissionDenied, ValidationError
from storage.models import AuditEvent, User


def _n_events(factory) -> int:
    return sf.count_rows(factory, AuditEvent)


def _rows(factory, table) -> int:
    return sf.count_rows(factory, table)


# ---------------------------------------------------------------- users


def test_users_passwords_and_logins(factory):
    with sf.reader(factory)() as s:
        alice = repo.get_user(s, "alice")
        assert alice.password_hash.startswith("$argon2id$") and sf.PASSWORD not in alice.password_hash
    with transaction(factory) as s:
        assert repo.authenticate(s, "alice", "wrong password") is None
        assert repo.authenticate(s, "alice", "wrong again!") is None
    with sf.reader(factory)() as s:
        alice = repo.get_user(s, "alice")
        assert alice.failed_logins == 2 and alice.last_failed_login_at is not None
    with transaction(factory) as s:
        user = repo.authenticate(s, "alice", sf.PASSWORD)
        assert user is not None and user.name == "alice" and user.failed_logins == 0
        assert repo.authenticate(s, "nobody", sf.PASSWORD) is None
        assert repo.authenticate(s, "", "") is None and repo.authenticate(s, "alice", None) is None
        repo.disable_user(s, "bob", actor="adam", reason="left the company")
        assert repo.authenticate(s, "bob", sf.PASSWORD) is None
    with sf.reader(factory)() as s:
        actions = list(s.scalars(select(AuditEvent.action).where(AuditEvent.action.like("login%")).order_by(AuditEvent.seq)))
        assert actions == ["login.failed", "login.failed", "login", "login.failed", "login.failed", "login.failed",
                           "login.failed"]


def test_default_hasher_is_argon2id():
    from argon2 import Type

    assert accounts._hasher.type is Type.ID and accounts._hasher.memory_cost >= 64 * 1024  # KiB


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)  # pure input checks: PostgreSQL adds nothing
@pytest.mark.parametrize(
    "name, role, password, error, words",
    [
        ("carl", "wizard", "long enough", ValidationError, "unknown role 'wizard'"),
        ("", "operator", "long enough", ValidationError, "user name is required"),
        ("x" * 65, "operator", "long enough", ValidationError, "at most 64"),
        ("bad name", "operator", "long enough", ValidationError, "may hold only"),
        ("system", "operator", "long enough", ValidationError, "reserved"),
        ("alice", "operator", "long enough", ValidationError, "already exists"),
        ("carl", "operator", "short", ValidationError, "5 characters long; at least 12"),
        ("carl", "operator", " " * 8, ValidationError, "at least 12"),
        ("carl", "operator", " " * 12, ValidationError, "only spaces"),
        ("carl", "operator", "\t \n" * 4, ValidationError, "only spaces"),
        ("carl", "operator", "x" * 257, ValidationError, "257 characters long; at most 256"),
        ("carlos.perez", "operator", "Carlos.Perez", ValidationError, "not be the user name"),
        ("x" * 70, "operator", "long enough pw", ValidationError, "70 characters long; at most 64"),
        ("carl", "", "long enough pw", ValidationError, "unknown role '': choose one of operator, reviewer"),
    ],
)
def test_bad_users_are_refused(factory, name, role, password, error, words):
    before = (_rows(factory, User), _n_events(factory))
    with pytest.raises(error, match=words), transaction(factory) as s:
        repo.create_user(s, name, role, password)
    assert (_rows(factory, User), _n_events(factory)) == before


def test_roles_and_permissions(factory, draft):
    with transaction(factory) as s:
        repo.set_role(s, "bob", "manager", actor="adam", reason="promoted")
    cases = [
        ("olga", lambda s: repo.add_pin(s, document_id=draft["document"], actor="olga", run_id=draft["run"],
                                        step_index=0, span_start=0, span_end=1, text="x"), "operator and may not pin"),
        ("alice", lambda s: repo.set_role(s, "olga", "admin", actor="alice", reason="why not"), "may not manage users"),
        ("nobody", lambda s: repo.create_document(s, actor="nobody", title="t"), "unknown user 'nobody'"),
        ("system", lambda s: repo.create_document(s, actor="system", title="t"), "system actor may not"),
    ]
    for _, call, words in cases:
        with pytest.raises((PermissionDenied, NotFound), match=words), transaction(factory) as s:
            call(s)
    with transaction(factory) as s:
        repo.disable_user(s, "alice", actor="adam", reason="on leave")
    with pytest.raises(PermissionDenied, match="disabled"), transaction(factory) as s:
        repo.create_document(s, actor="alice", title="t")
    for bad_reason in ("", " ", "r" * 2001):
        with pytest.raises(ValidationError), transaction(factory) as s:
            repo.set_role(s, "olga", "reviewer", actor="adam", reason=bad_reason)
    with sf.reader(factory)() as s:
        assert repo.get_user(s, "olga").role == "operator"
        assert repo.get_user(s, "bob").role == "manager"
        assert verify_chain(s).ok


def test_the_last_user_manager_cannot_be_demoted_or_disabled(factory):
    with transaction(factory) as s:
        with pytest.raises(ValidationError, match="last enabled user who can manage users"):
            repo.set_role(s, "adam", "reviewer", actor="adam", reason="oops")
    with transaction(factory) as s:
        repo.create_user(s, "ada", "admin", sf.PASSWORD + "!", actor="adam", reason="second admin")
    with transaction(factory) as s:
        with pytest.raises(ValidationError, match="yourself"):
            repo.disable_user(s, "adam", actor="adam", reason="leaving")
        repo.disable_user(s, "adam", actor="ada", reason="leaving")
    with transaction(factory) as s:
        with pytest.raises(ValidationError, match="last enabled user"):
            repo.set_role(s, "ada", "manager", actor="ada", reason="stepping down")
    with sf.reader(factory)() as s:
        assert repo.get_user(s, "ada").role == "admin"


@pytest.mark.parametrize("reason", ["\u200b", "\u202e\u200b ", " \u2060 "])
def test_a_reason_of_invisible_characters_is_refused(factory, reason):
    with transaction(factory) as s:
        with pytest.raises(ValidationError, match="empty or invisible"):
            repo.disable_user(s, "olga", actor="adam", reason=reason)
