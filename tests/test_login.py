"""Login hardening, as plain functions over the database: the throttle and lock that every replica
shares (two Services on one database stand for two app processes), names that are no user never
stored, the first-run admin forced to choose a password, the Password tab, the admin's reset and
unlock. The live server (cancel, sessions, the login form) is tests/test_login_live.py."""

from __future__ import annotations

import dataclasses
import hashlib
import threading
import time
from datetime import timedelta

import pytest
import storage_fixtures as sf
from sqlalchemy import select

from app import account, admin, audit, auth, draft, review
from app.common import whoami
from app.state import DraftState
from storage import repository as repo
from storage.db import transaction
from storage.models import AuditEvent, Base, utcnow

SECRET_NAME = "Tr0ub4dor&3-my-password"  # what a person types into the user-name field by mistake


def events(svc, action: str | None = None) -> list[AuditEvent]:
    with svc.reader() as s:
        stmt = select(AuditEvent).order_by(AuditEvent.seq)
        if action:
            stmt = stmt.where(AuditEvent.action == action)
        return list(s.scalars(stmt))


def policy(svc, **kw) -> None:
    svc.login_policy = dataclasses.replace(svc.login_policy, **kw)


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def replicas(request, tiny_model_dir, tmp_path, cheap_argon2):
    """Two Services (two app processes) on one database: a SQLite file, or a PostgreSQL schema."""
    from app.services import build_services

    url = f"sqlite:///{tmp_path / 'shared.sqlite3'}" if request.param == "sqlite" else request.getfixturevalue("pg_url")
    a = build_services(tiny_model_dir, db_url=url, data_dir=tmp_path / "a", login_delay_s=0.0)
    b = build_services(tiny_model_dir, db_url=url, data_dir=tmp_path / "b", login_delay_s=0.0)
    sf.seed_users(a.factory)
    yield a, b
    a.close()
    b.close()


def timed_login(svc, name: str, password: str, address: str | None = None) -> tuple[float, auth.Actor | None]:
    t0 = time.monotonic()
    actor = auth.login(svc, name, password, address)
    return time.monotonic() - t0, actor


def test_parallel_wrong_passwords_wait_one_after_the_other_then_lock(replicas):
    """12 wrong passwords at once: each check waits for the one before plus a doubling delay, the
    10th failure locks the account, and the two beyond the limit are refused without a check."""
    a, b = replicas
    for svc in (a, b):
        policy(svc, base_delay_s=0.05, max_delay_s=0.4)
    answers: list[tuple[float, auth.Actor | None]] = []
    lock = threading.Lock()
    go = threading.Barrier(12)

    def attempt(svc) -> None:
        go.wait()
        got = timed_login(svc, "alice", "wrong password!")
        with lock:
            answers.append(got)

    threads = [threading.Thread(target=attempt, args=(a if i % 2 else b,)) for i in range(12)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    times = sorted(t for t, actor in answers)
    assert len(answers) == 12 and all(actor is None for _, actor in answers)
    # slots 0, .05, .15, .35, .75, 1.15, ... 2.75 s: the last check waited the sum of the delays
    assert times[-1] >= 2.5, times
    assert sum(t >= 1.0 for t in times) >= 5, times  # not all at once: half of them waited over a second
    assert sum(t < 0.5 for t in times) >= 2  # the two over the limit were answered at once
    with a.reader() as s:
        assert set(repo.user_locks(s, ["alice", "bob"])) == {"alice"}
    assert len(events(a, "user.lock")) == 1
    assert auth.login(b, "alice", sf.PASSWORD) is None  # locked: the right password is refused too


def test_failures_on_one_replica_slow_the_other(replicas):
    a, b = replicas
    for svc in (a, b):
        policy(svc, base_delay_s=0.02, max_delay_s=8.0)
    for _ in range(7):
        assert auth.login(a, "alice", "wrong password!") is None
    waited, actor = timed_login(b, "alice", "wrong password!")
    assert actor is None and waited >= 0.02 * 2 ** 6 * 0.8, waited  # delay(7 failures) = 1.28 s
    waited, actor = timed_login(b, "bob", "wrong password!")  # another account is not slowed
    assert actor is None and waited < 0.5
    with b.reader() as s:
        assert repo.get_user(s, "alice").failed_logins == 8


def test_one_address_is_slowed_across_names_and_replicas(replicas):
    a, b = replicas
    for svc in (a, b):
        policy(svc, base_delay_s=0.1, address_allowance=3)
    for i in range(6):
        assert auth.login(a if i % 2 else b, f"guess{i}", "wrong password!", "203.0.113.9") is None
    waited, _ = timed_login(a, "alice", "wrong password!", "203.0.113.9")
    assert waited >= 0.3, waited  # 6 failures, 3 allowed: delay(3) = 0.4 s after the last slot
    waited, actor = timed_login(b, "bob", sf.PASSWORD, "198.51.100.4")  # another address: no wait
    assert actor == auth.Actor("bob", "reviewer") and waited < 0.3


def test_a_lock_is_lifted_by_an_admin_or_by_time_and_both_are_audited(replicas):
    a, b = replicas
    policy(a, lock_after=3, lock_s=0.6)
    policy(b, lock_after=3, lock_s=0.6)
    for _ in range(3):
        assert auth.login(a, "olga", "wrong password!") is None
    assert auth.login(b, "olga", sf.PASSWORD) is None  # locked, on the other replica too
    rows = admin.list_users(b, "adam").rows
    assert "locked until" in next(r for r in rows if r[0] == "olga")[2]
    assert admin.unlock(b, "olga", "olga", "no").kind == "error"  # only admins unlock
    assert "reason" in admin.unlock(b, "adam", "olga", "").message
    up = admin.unlock(b, "adam", "olga", "she called the help desk")
    assert up.kind == "ok", up.message
    assert auth.login(a, "olga", sf.PASSWORD) == auth.Actor("olga", "operator")
    assert admin.unlock(a, "adam", "olga", "again").kind == "error"  # not locked any more
    (unlock,) = events(a, "user.unlock")
    assert (unlock.actor, unlock.object_id, unlock.reason) == ("adam", "olga", "she called the help desk")
    # by time: lock again, wait the lock out, the right password works and the trail says why
    for _ in range(3):
        assert auth.login(a, "olga", "wrong password!") is None
    assert auth.login(a, "olga", sf.PASSWORD) is None
    time.sleep(0.7)
    assert auth.login(b, "olga", sf.PASSWORD) == auth.Actor("olga", "operator")
    locks, unlocks = events(a, "user.lock"), events(a, "user.unlock")
    assert len(locks) == 2 and len(unlocks) == 2
    assert unlocks[-1].actor == "system" and "timed out" in unlocks[-1].new_value


def test_a_name_that_is_no_user_is_stored_nowhere(replicas):
    a, b = replicas
    policy(a, lock_after=3)
    for svc in (a, b, a, b):
        assert auth.login(svc, SECRET_NAME, "anything at all", "192.0.2.1") is None
    assert auth.login(a, SECRET_NAME, "anything at all") is None  # locked like a real name would be
    with transaction(a.factory) as s:
        assert repo.authenticate(s, SECRET_NAME, "anything") is None
    failed = events(a, "login.failed")
    assert len(failed) == 6 and {e.object_id for e in failed} == {repo.UNKNOWN_USER}
    plain_hash = hashlib.sha256(SECRET_NAME.encode()).hexdigest()
    with a.reader() as s:
        for table in Base.metadata.sorted_tables:
            for row in s.execute(select(table)).all():
                for value in row:
                    text = value.decode("latin-1") if isinstance(value, bytes) else str(value)
                    assert SECRET_NAME not in text and plain_hash not in text, (table.name, text)


def test_the_first_run_admin_must_choose_a_new_password(app_services, tmp_path, monkeypatch):
    from app import services

    monkeypatch.delenv(services.ADMIN_PASSWORD_ENV, raising=False)
    svc = services.build_services(app_services.model_dir, data_dir=tmp_path / "fresh", login_delay_s=0.0)
    try:
        one_time = services.ensure_admin(svc)
        assert auth.login(svc, "admin", one_time) == auth.Actor("admin", "admin")  # the login itself works
        line, screens, must = whoami(svc, "admin")
        assert screens == [] and must and "must choose a new password" in line
        for up in (admin.list_users(svc, "admin"), audit.audit_table(svc, "admin", audit.AuditQuery()),
                   review.review_queue(svc, "admin"),
                   admin.add_user(svc, "admin", "nina", "operator", "long password 1")):
            assert up.kind == "error" and "Password tab" in up.message, up.message
        first = list(draft.generate(svc, "admin", DraftState(), template="Shift handover", length=None, steps=2,
                                    seed=1, temperature=1.0))
        assert first[-1].kind == "error" and "Password tab" in first[-1].message
        refused = [account.change_password(svc, "admin", "not it at all", "a brand new pass", "a brand new pass"),
                   account.change_password(svc, "admin", one_time, "a brand new pass", "another new pass"),
                   account.change_password(svc, "admin", one_time, "short", "short"),
                   account.change_password(svc, "admin", one_time, one_time, one_time),
                   account.change_password(None, None, one_time, "a brand new pass", "a brand new pass")]
        assert [r.kind for r in refused] == ["error"] * 5, [r.message for r in refused]
        assert "old password is not right" in refused[0].message and "differ" in refused[1].message
        ok = account.change_password(svc, "admin", one_time, "a brand new pass", "a brand new pass")
        assert ok.kind == "ok" and ok.changed
        assert whoami(svc, "admin")[1] == ["draft", "review", "audit", "admin"]
        assert admin.list_users(svc, "admin").kind == "info"
        assert auth.login(svc, "admin", one_time) is None
        assert auth.login(svc, "admin", "a brand new pass") == auth.Actor("admin", "admin")
        (change,) = events(svc, "user.password_change")
        assert change.actor == "admin" and change.new_value is None
        assert len(events(svc, "password_change.failed")) == 1
        for e in events(svc):
            assert one_time not in f"{e.old_value} {e.new_value} {e.reason}"
    finally:
        svc.close()


def test_an_admin_reset_forces_a_change_and_ends_the_sessions(app_services):
    svc = app_services
    with transaction(svc.factory) as s:
        repo.create_login_session(s, "alice-token-1", "alice", ttl_s=60)
        repo.create_login_session(s, "alice-token-2", "alice", ttl_s=60)
    assert svc.sessions.user("alice-token-1") == "alice"
    assert admin.reset_password(svc, "alice", "bob", "a new password", "").kind == "error"  # admins only
    assert "Password tab" in admin.reset_password(svc, "adam", "adam", "a new password", "").message
    up = admin.reset_password(svc, "adam", "alice", "temporary pass 1", "forgot it")
    assert up.kind == "ok", up.message
    assert "must change password" in next(r for r in up.rows if r[0] == "alice")[2]
    assert svc.sessions.user("alice-token-1") is None and svc.sessions.user("alice-token-2") is None
    assert auth.login(svc, "alice", "temporary pass 1") is not None
    assert "Password tab" in review.review_queue(svc, "alice").message
    (ev,) = events(svc, "user.set_password")
    assert (ev.actor, ev.object_id, ev.reason) == ("adam", "alice", "forgot it") and "temporary" not in ev.new_value
    # a user changing their own password keeps the session that asked and ends the others
    with transaction(svc.factory) as s:
        repo.create_login_session(s, "alice-here", "alice", ttl_s=60)
        repo.create_login_session(s, "alice-elsewhere", "alice", ttl_s=60)
    assert account.change_password(svc, "alice", "temporary pass 1", "my own password", "my own password",
                                   keep_token="alice-here").kind == "ok"
    assert svc.sessions.user("alice-here") == "alice" and svc.sessions.user("alice-elsewhere") is None
    assert review.review_queue(svc, "alice").kind != "error"


def test_a_wrong_old_password_counts_towards_the_lock(app_services):
    svc = app_services
    policy(svc, lock_after=3)
    for _ in range(3):
        assert "not right" in account.change_password(svc, "bob", "wrong password!", "my new password",
                                                      "my new password").message
    locked = account.change_password(svc, "bob", sf.PASSWORD, "my new password", "my new password")
    assert locked.kind == "error" and "locked" in locked.message
    assert auth.login(svc, "bob", sf.PASSWORD) is None


def test_login_sessions_expire_and_end_at_logout_and_when_disabled(app_services):
    svc = app_services
    with transaction(svc.factory) as s:
        repo.create_login_session(s, "old", "olga", ttl_s=60, now=utcnow() - timedelta(seconds=61))
        repo.create_login_session(s, "t1", "olga", ttl_s=60)
        repo.create_login_session(s, "t2", "olga", ttl_s=60)
        repo.create_login_session(s, "m1", "maya", ttl_s=60)
    assert svc.sessions.user("old") is None and svc.sessions.user("t1") == "olga"
    assert "t1" in svc.sessions and "nope" not in svc.sessions and list(svc.sessions) == []
    assert svc.sessions.logout("t1", everywhere=False) == "olga"
    assert svc.sessions.user("t1") is None and svc.sessions.user("t2") == "olga"
    assert admin.set_enabled(svc, "adam", "olga", False, "left the company").kind == "ok"
    assert svc.sessions.user("t2") is None and svc.sessions.user("m1") == "maya"
    assert svc.sessions.logout("m1") == "maya" and svc.sessions.user("m1") is None
    assert [e.actor for e in events(svc, "logout")] == ["olga", "maya"]
    with transaction(svc.factory) as s:
        repo.create_login_session(s, "a-token-for-maya", "maya", ttl_s=60)
    with svc.reader() as s:  # only the token's hash is kept
        stored = s.scalars(select(Base.metadata.tables["login_sessions"].c.token_hash)).all()
    assert stored == [hashlib.sha256(b"a-token-for-maya").hexdigest()]


def test_slots_double_then_cap_and_old_failures_are_forgotten(factory):
    """The throttle on its own clock: slots after consecutive failures, the window, the lock's end,
    and rows forgotten after a day."""
    from storage.models import LoginThrottle

    pol = repo.LoginPolicy(base_delay_s=1.0, max_delay_s=4.0, lock_after=6, lock_s=60, window_s=600)
    t0 = utcnow()

    def fail(at):
        with transaction(factory) as s:
            att = repo.begin_attempt(s, "bob", None, pol, now=at)
            repo.end_attempt(s, att, False, pol, now=at)
        return att

    waits = [fail(t0).wait_s(t0) for _ in range(6)]  # six at the same instant: each after the one before
    assert waits == [0.0, 1.0, 3.0, 7.0, 11.0, 15.0]
    locked = fail(t0 + timedelta(seconds=30))
    assert locked.locked and locked.wait_s(t0 + timedelta(seconds=30)) == 0.0
    after_lock = fail(t0 + timedelta(seconds=61))  # the lock ran out: counting starts again
    assert not after_lock.locked and after_lock.wait_s(t0 + timedelta(seconds=61)) == 0.0
    with factory() as s:
        (unlock,) = s.scalars(select(AuditEvent).where(AuditEvent.action == "user.unlock")).all()
        assert unlock.actor == "system" and len(s.scalars(select(AuditEvent).where(
            AuditEvent.action == "user.lock")).all()) == 1
    later = t0 + timedelta(seconds=61 + 601)  # past the window: the one failure is forgotten
    assert fail(later).wait_s(later) == 0.0
    with transaction(factory) as s:  # a day on, another name's attempt deletes bob's row
        repo.begin_attempt(s, "alice", None, pol, now=later + timedelta(days=1, seconds=1))
    with factory() as s:
        assert len(s.scalars(select(LoginThrottle)).all()) == 1
