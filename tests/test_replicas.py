"""Two app replicas on one PostgreSQL behind nginx with sticky sessions (bench.replicas): 8 clients
draft, pin and edit for 3 minutes; replica A is killed with SIGKILL half way. Every broken run is
resumed on replica B, nothing acknowledged is lost, the trail verifies, no run is left running."""

from __future__ import annotations

import os

import pytest

from bench.replicas import NGINX, run

pytestmark = [pytest.mark.slow, pytest.mark.postgres]


@pytest.mark.skipif(not os.path.exists(NGINX),
                    reason="nginx is not installed (Debian's nginx-light; .ci/run installs it)")
def test_a_replica_dies_and_its_runs_go_on_on_the_other(pg_url, tiny_model_dir, tmp_path):
    r = run(pg_url, str(tiny_model_dir), tmp_path, seconds=180, clients=8)
    assert r["errors"] == [], r
    assert r["drafts"] >= 8 and r["acts"] >= 16, r  # every client drafted and steered
    assert r["resumed"] >= 1, r  # streams broke at the kill and went on on replica B
    assert (r["lost"], r["unfinished"], r["running"], r["verify"]) == (0, 0, 0, 0), r
