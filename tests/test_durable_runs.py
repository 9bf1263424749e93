"""Durable runs (app.run_store, app.runs, storage.repository.run_state): what a person did to a
run is held after the run falls out of the cache, in another process (a second Services on the
same database stands for a restart or another replica), and a run whose process stopped can be
resumed by its owner; two processes never generate one run at once.

Each test runs on SQLite and on PostgreSQL."""

from __future__ import annotations

import time

import pytest
import storage_fixtures as sf

from app import draft, runs, steering
from app.runs import RunRegistry
from app.state import DraftState
from storage import repository as repo
from storage.db import transaction

TEMPLATE = "Shift handover"


@pytest.fixture
def replicas(tiny_model_dir, tmp_path, db_url, cheap_argon2, monkeypatch):
    """Two app processes' services on one database (A and B), with a 1 s lease."""
    from app.services import build_services

    monkeypatch.setenv("DIFFDRAFT_RUN_LEASE_S", "1")
    a = build_services(tiny_model_dir, db_url=db_url, data_dir=tmp_path / "a", login_delay_s=0.0)
    sf.seed_users(a.factory)
    b = build_services(tiny_model_dir, db_url=db_url, data_dir=tmp_path / "b", login_delay_s=0.0)
    assert a.instance != b.instance and a.lease_s == 1.0
    yield a, b
    a.close()
    b.close()


def paused_run(svc, steps=12, stop_after=4, template=TEMPLATE, length=None):
    gen = draft.generate(svc, "alice", DraftState(), template=template, length=length, steps=steps, seed=3,
                         temperature=1.0)
    ups = [next(gen) for _ in range(stop_after)]
    st = ups[-1].state
    assert draft.pause(svc, "alice", st).kind == "info"
    last = list(gen)[-1]
    assert last.message.startswith("Paused"), last.message
    return st


def held_view(ctrl):
    """What a person's acts made of the run: length, held positions with tokens and kinds, layout."""
    return ctrl.base.length, dict(ctrl.held), dict(ctrl.kinds), ctrl.layout


def test_edits_and_pins_survive_eviction_and_another_process(replicas):
    """The issue's probe: pause, pin two tokens, replace 3 tokens by 7; then the run leaves the
    cache (or the process dies): Resume keeps the edit and both pins at their moved positions."""
    a, b = replicas
    st = paused_run(a, template=None, length=64)
    ctrl = a.runs.get(st.run_id)
    want40, want62 = int(ctrl.base.tokens[40]), int(ctrl.base.tokens[62])
    assert steering.toggle_pin(a, "alice", st, 40).kind == "ok"
    assert steering.toggle_pin(a, "alice", st, 62).kind == "ok"
    up = steering.edit_span(a, "bob", st, 10, 13, " one two three four five six seven", "longer")
    assert up.kind == "ok", up.message
    n_new = ctrl.base.length - 64 + 3
    expect = held_view(ctrl)
    assert expect[0] == 64 - 3 + n_new and expect[1][40 + n_new - 3] == want40 and expect[1][62 + n_new - 3] == want62

    a.runs = RunRegistry(capacity=4)  # evicted: as after 260 other drafts
    assert held_view(runs.control_for(a, st)) == expect
    other = runs.load_control(b, st.run_id)  # restarted, or another replica
    assert held_view(other) == expect
    assert all(other.kinds[p] == "edit" for p in range(10, 10 + n_new))

    final = list(draft.resume(b, "alice", st))[-1]
    assert final.kind == "ok", final.message
    done = b.runs.get(st.run_id)
    assert done.base.length == expect[0]
    assert all(int(done.base.tokens[p]) == t for p, t in expect[1].items())


def test_an_edit_made_while_streaming_is_held_after_a_reload(replicas):
    a, b = replicas
    gen = draft.generate(a, "alice", DraftState(), template=None, length=48, steps=16, seed=5, temperature=1.0)
    ups = [next(gen) for _ in range(3)]
    st = ups[-1].state
    up = steering.edit_span(a, "bob", st, 20, 30, " pressure check passed", "fact")
    assert up.kind == "ok", up.message
    ctrl = a.runs.get(st.run_id)
    span = [p for p, k in ctrl.kinds.items() if k == "edit"]
    edited = [int(ctrl.base.tokens[p]) for p in span]
    for _ in range(3):
        next(gen)
    assert draft.pause(a, "alice", st).kind == "info"
    list(gen)
    reloaded = runs.load_control(b, st.run_id)
    assert [reloaded.kinds.get(p) for p in span] == ["edit"] * len(span)
    final = list(draft.resume(b, "alice", st))[-1]
    assert final.kind == "ok", final.message
    assert [int(b.runs.get(st.run_id).base.tokens[p]) for p in span] == edited


def test_a_cached_run_is_read_again_when_another_process_changed_it(replicas):
    a, b = replicas
    st = paused_run(a, template=None, length=32)
    assert steering.toggle_pin(a, "alice", st, 3).kind == "ok"
    assert steering.toggle_pin(b, "bob", st, 7).kind == "ok"  # B reads A's pin, adds its own
    up = steering.toggle_pin(a, "alice", st, 9)  # A's cached copy is stale: read again, B's pin kept
    assert up.kind == "ok", up.message
    assert set(a.runs.get(st.run_id).held) == {3, 7, 9}
    with a.reader() as s:
        assert sorted(p.span_start for p in repo.active_pins(s, run_id=st.run_id)) == [3, 7, 9]


def test_only_one_process_generates_a_run_and_a_dead_ones_run_is_resumable(replicas):
    a, b = replicas
    gen = draft.generate(a, "alice", DraftState(), template=None, length=32, steps=40, seed=2, temperature=1.0)
    st = next(gen).state
    next(gen)
    busy = list(draft.resume(b, "alice", st))  # A streams it: B refuses, A's stream goes on
    assert busy[-1].kind == "error" and "another app process" in busy[-1].message
    assert next(gen).kind == "info"
    # A dies mid-stream: nothing releases its lease (the generator is simply never resumed)
    with a.reader() as s:
        assert repo.get_run(s, st.run_id).status == "running"
    time.sleep(1.2)
    with transaction(b.factory) as s:
        assert repo.pause_interrupted(s) == [st.run_id]
    with b.reader() as s:
        assert repo.get_run(s, st.run_id).status == "paused"
        events = [e for e in repo_events(s) if e.action == "run.paused"]
        assert events[-1].actor == "system" and "interrupted" in events[-1].reason
    final = list(draft.resume(b, "alice", st))[-1]
    assert final.kind == "ok" and final.step == 40, final.message
    gen.close()  # A's generator, when it is finally closed, must not touch the run B finished
    with b.reader() as s:
        assert repo.get_run(s, st.run_id).status == "paused"


def repo_events(s):
    from sqlalchemy import select

    from storage.models import AuditEvent

    return list(s.scalars(select(AuditEvent).order_by(AuditEvent.seq)))


def test_a_stream_that_is_closed_leaves_the_run_paused_not_running(replicas):
    """A cancelled event or a closed page closes the generator: the run is paused, its lease given back."""
    a, _ = replicas
    gen = draft.generate(a, "alice", DraftState(), template=None, length=32, steps=30, seed=2, temperature=1.0)
    st = next(gen).state
    next(gen)
    gen.close()
    with a.reader() as s:
        assert repo.get_run(s, st.run_id).status == "paused"
        state = repo.get_run_state(s, st.run_id)
        assert state.owner is None and state.lease_until is None
    final = list(draft.resume(a, "alice", st))[-1]
    assert final.kind == "ok" and final.step == 30


def test_going_back_and_a_branch_are_rebuilt_in_another_process(replicas):
    a, b = replicas
    st = paused_run(a, template=None, length=24, steps=10, stop_after=7)
    assert draft.view_step(a, "alice", st, 3).step == 3
    assert steering.toggle_pin(a, "alice", st, 5).kind == "ok"
    other = runs.load_control(b, st.run_id)
    assert other.branch_from == 3 and other.base.index == 3 and 5 in other.held
    final = list(draft.resume(b, "alice", st))[-1]  # continues as a branch from step 3, in B
    assert final.kind == "ok", final.message
    assert final.state.run_id != st.run_id
    with b.reader() as s:
        branch = repo.get_run(s, final.state.run_id)
        assert (branch.parent_run_id, branch.parent_step_index) == (st.run_id, 3)
    back = runs.load_control(a, st.run_id)  # the old run got its last step back
    assert back.branch_from is None and back.base.index == 6 and 5 not in back.held


def test_a_run_recorded_before_run_states_still_opens(replicas):
    """A run without a stored state (made by an older version) is rebuilt from its steps and pins."""
    from sqlalchemy import delete

    from storage.models import RunState

    a, b = replicas
    st = paused_run(a, template=None, length=16, steps=8, stop_after=3)
    assert steering.toggle_pin(a, "alice", st, 4).kind == "ok"
    with transaction(a.factory) as s:
        s.execute(delete(RunState).where(RunState.run_id == st.run_id))
    ctrl = runs.load_control(b, st.run_id)
    assert ctrl.kinds.get(4) == "pin" and ctrl.version == 0
    final = list(draft.resume(b, "alice", st))[-1]
    assert final.kind == "ok", final.message
    with b.reader() as s:
        assert repo.get_run_state(s, st.run_id) is not None  # stored from then on


def test_the_keeper_renews_its_streams_and_pauses_a_dead_processs_runs(replicas):
    from app.leases import LeaseKeeper

    a, b = replicas
    gen = draft.generate(a, "alice", DraftState(), template=None, length=24, steps=40, seed=2, temperature=1.0)
    st = next(gen).state
    for _ in range(4):  # longer than the 1 s lease, renewed only by A's keeper (no step recorded meanwhile)
        time.sleep(0.4)
        LeaseKeeper(a).tick(sweep=False)
    LeaseKeeper(b).tick()  # B's sweep: A's lease holds, nothing to pause
    with b.reader() as s:
        assert repo.get_run(s, st.run_id).status == "running"
        assert repo.holds_lease(s, st.run_id, a.instance)
    time.sleep(1.2)  # A stops renewing, as a dead process would
    LeaseKeeper(b).tick()
    with b.reader() as s:
        assert repo.get_run(s, st.run_id).status == "paused"
    gen.close()
