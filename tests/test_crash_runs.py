"""The crash test of durable runs (bench.crash_runs): an app process steering a run is killed with
SIGKILL at 20 random moments; after each kill a new process reopens the run as its owner and
resumes it. Nothing acknowledged may be lost, every held token must hold, the trail must verify
and no run may be left "running" without a live owner. On SQLite and on PostgreSQL."""

from __future__ import annotations

import json

import pytest

from bench.crash_runs import run_cycles

pytestmark = pytest.mark.slow


@pytest.mark.parametrize("seed", [0])
def test_twenty_kills_lose_nothing(db_url, tiny_model_dir, tmp_path, seed):
    r = run_cycles(db_url, str(tiny_model_dir), tmp_path, kills=20, seed=seed)
    assert r["acts"] >= 20 and r["reopened"] >= 15, r  # the kills landed while runs were being steered
    assert r["lost"] == 0, r["details"]
    assert (r["broken"], r["running"], r["verify"]) == (0, 0, 0), r


def _paused(svc, gen, st):
    from app import draft

    assert draft.pause(svc, "alice", st).kind == "info"
    last = list(gen)[-1]
    assert last.message.startswith("Paused"), last.message


def test_checker_takes_a_branch_gone_back_before_its_branch_point(app_services, tmp_path):
    """The crash checker's own rule, on the case a CI run met: the last acknowledged act is a pin
    on an earlier step; Resume made a branch (not acknowledged: killed first); in the branch the
    person went back to a step before its branch point. Nothing is lost (the branch keeps its last
    step aside), and the checker must say so; a pin that is really gone is still reported."""
    from app import draft, runs, steering
    from app.state import DraftState
    from bench.crash_worker import _ack, _free, _verify, acks

    svc, ack = app_services, tmp_path / "acks.jsonl"
    gen = draft.generate(svc, "alice", DraftState(), template=None, length=48, steps=30, seed=1, temperature=1.0)
    st = next(gen).state
    for _ in range(3):
        next(gen)
    ctrl = runs.control_for(svc, st)
    assert steering.toggle_pin(svc, "alice", st, _free(ctrl)[5]).kind == "ok"  # made at step 3
    for _ in range(8):
        next(gen)
    _paused(svc, gen, st)
    assert draft.view_step(svc, "alice", st, 9).kind != "error"
    assert steering.toggle_pin(svc, "alice", st, _free(ctrl)[0]).kind == "ok"
    _ack(ack, svc, ctrl, "pin_back")
    snap = acks(ack)[-1]["snapshot"]
    assert sum(k == "pin" for _, _, k in snap["held"]) == 2 and snap["branch_from"] == 9

    gen = draft.resume(svc, "alice", st)
    branch = next(gen).state
    assert branch.run_id != st.run_id
    next(gen)
    _paused(svc, gen, branch)
    up = draft.view_step(svc, "alice", branch, 2)  # before the branch point and before the first pin
    assert up.kind != "error", up.message
    assert not any(k == "pin" for k in runs.control_for(svc, branch).kinds.values())

    _, result = _verify(svc, acks(ack))
    assert result["in_flight"] == 1 and result["lost"] == 0, result

    lines = ack.read_text().splitlines()  # an acknowledged pin the run does not hold: reported
    fake = acks(ack)[-1]
    fake["snapshot"]["held"].append([47, 10**6, "pin"])
    ack.write_text("\n".join([*lines[:-1], json.dumps(fake)]) + "\n")
    _, result = _verify(svc, acks(ack))
    assert result["lost"] == 1 and result["detail"]["missing"] == [(10**6, "pin")], result
