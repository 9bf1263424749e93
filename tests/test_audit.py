"""The hash-chained audit trail: format, append rules, triggers, tampering, concurrency, CLI."""

from __future__ import annotations

import hashlib
import json
import multiprocessing as mp

import pytest
from sqlalchemy import func, select, text

import storage_fixtures as sf
from storage import repository as repo
from storage.audit import (
    AuditFilter,
    append_event,
    canonical_json,
    list_events,
    main as audit_main,
    verify_chain,
)
from storage.db import make_engine, make_session_factory, transaction
from storage.errors import AuditRefused, NotFound, ValidationError
from storage.models import GENESIS_HASH, AuditEvent, AuditHead, User


def _events(factory) -> list[AuditEvent]:
    with sf.reader(factory)() as s:
        return list(s.scalars(select(AuditEvent).order_by(AuditEvent.seq)))


def _count(factory) -> int:
    with sf.reader(factory)() as s:
        return s.scalar(select(func.count()).select_from(AuditEvent))


def _append_some(factory, n: int) -> None:
    with transaction(factory) as s:
        for i in range(n):
            append_event(s, "alice", "reviewer", "test.note", "document", 7, old={"i": i}, new={"i": i + 1},
                         reason=f"note {i}", settings={"steps": 8, "temperature": 0.5})


def _drop_guard(factory, db_url: str) -> None:
    """What someone with raw database access does first: remove the append-only triggers."""
    with transaction(factory) as s:
        if db_url.startswith("sqlite"):
            s.execute(text("DROP TRIGGER audit_events_no_update"))
            s.execute(text("DROP TRIGGER audit_events_no_delete"))
        else:
            s.execute(text("DROP TRIGGER audit_events_no_change ON audit_events"))


def test_chain_links_and_documented_canonical_form(factory):
    _append_some(factory, 3)
    events = _events(factory)
    assert [e.seq for e in events] == list(range(1, len(events) + 1))
    assert events[0].prev_hash == GENESIS_HASH
    for prev, ev in zip(events, events[1:]):
        assert ev.prev_hash == prev.hash
    ev = events[-1]
    # The canonical form as docs/STORAGE.md states it, rebuilt here independently of storage.audit.
    doc = {
        "seq": ev.seq, "ts": ev.ts.strftime("%Y-%m-%dT%H:%M:%S.%fZ"), "actor": "alice", "role": "reviewer",
        "action": "test.note", "object_type": "document", "object_id": "7", "document_id": 7, "template_id": None,
        "old_value": '{"i":2}', "new_value": '{"i":3}', "reason": "note 2",
        "settings": '{"steps":8,"temperature":0.5}', "prev_hash": ev.prev_hash,
    }
    raw = json.dumps(doc, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()
    assert raw == canonical_json({k: getattr(ev, k) for k in doc})
    assert hashlib.sha256(raw).hexdigest() == ev.hash
    with sf.reader(factory)() as s:
        head = s.get(AuditHead, 1)
        assert (head.seq, head.hash) == (ev.seq, ev.hash)
        assert verify_chain(s).ok


def test_event_commits_or_rolls_back_with_the_domain_row(factory):
    before = _count(factory)
    with pytest.raises(RuntimeError), transaction(factory) as s:
        repo.create_user(s, "carl", "operator", "long enough pw")
        raise RuntimeError("the request failed after the write")
    with sf.reader(factory)() as s:
        assert repo.find_user(s, "carl") is None
        assert _count(factory) == before
        assert verify_chain(s).ok
    with transaction(factory) as s:
        repo.create_user(s, "carl", "operator", "long enough pw")
    assert _count(factory) == before + 1


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)  # pure input checks: PostgreSQL adds nothing
@pytest.mark.parametrize(
    "kwargs, error, words",
    [
        (dict(actor="nobody", role="reviewer"), NotFound, "unknown user 'nobody'"),
        (dict(actor="alice", role="manager"), ValidationError, "has role 'reviewer'"),
        (dict(actor="alice", role="wizard"), ValidationError, "unknown role 'wizard'"),
        (dict(actor="alice", role="system"), ValidationError, "go together"),
        (dict(reason=""), ValidationError, "empty"),
        (dict(reason="   "), ValidationError, "empty"),
        (dict(reason="x" * 2001), ValidationError, "at most 2000"),
        (dict(reason="bell\x07"), ValidationError, "control characters"),
        (dict(action="Drop Table"), ValidationError, "action"),
        (dict(new={"x": float("nan")}), ValidationError, "not valid JSON"),
        (dict(new={"x": object()}), ValidationError, "cannot store"),
    ],
)
def test_bad_events_are_refused_and_leave_no_rows(factory, kwargs, error, words):
    args = dict(actor="alice", role="reviewer", action="test.note", object_type="document", object_id=1)
    args.update(kwargs)
    before = _count(factory)
    with pytest.raises(error, match=words.replace("(", r"\(")), transaction(factory) as s:
        append_event(s, **args)
    assert _count(factory) == before
    with sf.reader(factory)() as s:
        assert verify_chain(s).ok


def test_update_and_delete_are_refused_by_the_database(factory, db_url):
    _append_some(factory, 2)
    before = [(e.seq, e.hash, e.reason) for e in _events(factory)]
    for sql in ("UPDATE audit_events SET reason = 'rewritten' WHERE seq = 1",
                "DELETE FROM audit_events WHERE seq = 1",
                "UPDATE audit_head SET seq = 0, hash = '" + GENESIS_HASH + "'",
                "DELETE FROM audit_head"):
        with pytest.raises(AuditRefused, match="append-only"), transaction(factory) as s:
            s.execute(text(sql))
    if db_url.startswith("postgresql"):
        with pytest.raises(AuditRefused, match="append-only"), transaction(factory) as s:
            s.execute(text("TRUNCATE audit_events CASCADE"))
    with sf.reader(factory)() as s:
        assert verify_chain(s).ok
    assert [(e.seq, e.hash, e.reason) for e in _events(factory)] == before


def test_verify_names_a_changed_row(factory, db_url, capsys):
    _append_some(factory, 6)
    _drop_guard(factory, db_url)
    with transaction(factory) as s:
        s.execute(text("UPDATE audit_events SET reason = 'nothing happened' WHERE seq = 4"))
    with sf.reader(factory)() as s:
        result = verify_chain(s)
    assert not result.ok and result.broken_seq == 4
    assert "event 4 was changed" in result.message
    assert audit_main(["verify", "--db-url", db_url]) == 1
    assert "BROKEN at event 4" in capsys.readouterr().err


def test_verify_names_a_deleted_row(factory, db_url, capsys):
    _append_some(factory, 6)
    _drop_guard(factory, db_url)
    with transaction(factory) as s:
        s.execute(text("DELETE FROM audit_events WHERE seq = 3"))
    with sf.reader(factory)() as s:
        result = verify_chain(s)
    assert not result.ok and result.broken_seq == 3
    assert "event 3 is missing" in result.message
    assert audit_main(["verify", "--db-url", db_url]) == 1
    assert "event 3 is missing" in capsys.readouterr().err


def test_verify_notices_a_cut_tail_and_a_rehashed_row(factory, db_url):
    _append_some(factory, 5)
    last = _count(factory)
    _drop_guard(factory, db_url)
    with transaction(factory) as s:
        s.execute(text("DELETE FROM audit_events WHERE seq = :n"), {"n": last})
    with sf.reader(factory)() as s:
        result = verify_chain(s)
    assert not result.ok and result.broken_seq == last and f"event {last} is missing" in result.message

    # Changing a row and recomputing its own hash still breaks the link to the next row.
    with transaction(factory) as s:
        ev = s.get(AuditEvent, 2)
        fields = {k: getattr(ev, k) for k in ("seq", "ts", "actor", "role", "action", "object_type", "object_id",
                                              "document_id", "template_id", "old_value", "new_value", "reason",
                                              "settings", "prev_hash")}
        fields["reason"] = "forged"
        forged = hashlib.sha256(canonical_json(fields)).hexdigest()
        s.execute(text("UPDATE audit_events SET reason = 'forged', hash = :h WHERE seq = 2"), {"h": forged})
    with sf.reader(factory)() as s:
        result = verify_chain(s)
    assert not result.ok and result.broken_seq == 3 and "does not follow event 2" in result.message


def test_verify_cli_exit_codes(db_url, factory, tmp_path, capsys):
    _append_some(factory, 2)
    assert audit_main(["verify", "--db-url", db_url]) == 0
    assert "intact" in capsys.readouterr().out
    assert audit_main(["verify", "--db-url", f"sqlite:///{tmp_path / 'empty.sqlite3'}"]) == 2
    assert "python -m storage migrate" in capsys.readouterr().err


def test_list_events_filters(factory):
    with transaction(factory) as s:
        append_event(s, "alice", "reviewer", "edit", "document", 1)
        append_event(s, "maya", "manager", "export", "export", 1)
        append_event(s, "alice", "reviewer", "edit", "document", 2)
    with sf.reader(factory)() as s:
        assert [e.object_id for e in list_events(s, AuditFilter(user="alice", action="edit"))] == ["2", "1"]
        assert [e.actor for e in list_events(s, AuditFilter(role="manager"))] == ["maya"]
        assert [e.object_id for e in list_events(s, AuditFilter(document_id=2))] == ["2"]
        assert len(list_events(s, AuditFilter(action="edit"), limit=1)) == 1


def _assert_all_appended(factory, expected_ids: set[str]) -> None:
    ids = sf.object_ids(factory)
    assert len(ids) == len(expected_ids) and set(ids) == expected_ids  # none lost, none doubled
    with sf.reader(factory)() as s:
        result = verify_chain(s)
        assert result.ok, result.message
        seqs = list(s.scalars(select(AuditEvent.seq).order_by(AuditEvent.seq)))
        assert seqs == list(range(1, len(seqs) + 1))


@pytest.mark.slow
def test_eight_threads_append_2000_events(factory, db_url):
    errors = sf.run_appenders(db_url, n_threads=8, per_thread=250, actor="alice", role="reviewer")
    assert errors == []
    _assert_all_appended(factory, {f"t{k}-{i}" for k in range(8) for i in range(250)})


@pytest.mark.slow
@pytest.mark.postgres
def test_four_processes_append_2000_events_on_postgres(pg_url, cheap_argon2):
    engine = make_engine(pg_url)
    factory = make_session_factory(engine)
    sf.seed_users(factory, {"alice": "reviewer"})
    ctx = mp.get_context("spawn")
    barrier, done = ctx.Barrier(4), ctx.Queue()
    procs = [ctx.Process(target=sf.append_worker, args=(pg_url, "alice", "reviewer", 500, f"p{k}", barrier, done))
             for k in range(4)]
    for p in procs:
        p.start()
    results = [done.get(timeout=240) for _ in procs]
    for p in procs:
        p.join(timeout=30)
    assert sorted(results) == [("ok", 500)] * 4, results
    _assert_all_appended(factory, {f"p{k}-{i}" for k in range(4) for i in range(500)})
    engine.dispose()


def test_system_actor_and_user_rows_are_separate(factory):
    with transaction(factory) as s:
        ev = append_event(s, "system", "system", "app.start", "app", "main")
        assert ev.actor == "system"
        assert s.scalar(select(User).where(User.name == "system")) is None
