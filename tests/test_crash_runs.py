"""The crash test of durable runs (bench.crash_runs): an app process steering a run is killed with
SIGKILL at 20 random moments; after each kill a new process reopens the run as its owner and
resumes it. Nothing acknowledged may be lost, every held token must hold, the trail must verify
and no run may be left "running" without a live owner. On SQLite and on PostgreSQL."""

from __future__ import annotations

import pytest

from bench.crash_runs import run_cycles

pytestmark = pytest.mark.slow


@pytest.mark.parametrize("seed", [0])
def test_twenty_kills_lose_nothing(db_url, tiny_model_dir, tmp_path, seed):
    r = run_cycles(db_url, str(tiny_model_dir), tmp_path, kills=20, seed=seed)
    assert r["acts"] >= 20 and r["reopened"] >= 15, r  # the kills landed while runs were being steered
    assert r["lost"] == 0, r["details"]
    assert (r["broken"], r["running"], r["verify"]) == (0, 0, 0), r
