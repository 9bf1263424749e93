"""bench.serving runs both serving modes and finds the same drafts in each."""

from __future__ import annotations

import json

import pytest

from bench import serving


def test_serving_bench_compares_modes_on_the_same_drafts(tiny_model_dir, capsys):
    assert serving.main(["--model", str(tiny_model_dir), "--drafters", "1,3", "--steps", "3", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    rows = {(r["mode"], r["drafters"]): r for r in out["rows"]}
    assert set(rows) == {(m, n) for m in ("queue", "batched") for n in (1, 3)}
    for (mode, n), r in rows.items():
        assert r["errors"] == 0 and r["same"] == n, (mode, n)  # batched drafts equal the queue's
        assert 0 < r["first_p50_s"] <= r["first_max_s"] <= r["wall_s"]
    assert rows[("batched", 3)]["mean_batch"] >= 1.0 and rows[("queue", 3)]["mean_batch"] is None


@pytest.mark.parametrize("bad", [["--drafters", "0"], ["--drafters", "a,b"], ["--steps", "0"]])
def test_serving_bench_refuses_bad_arguments(bad, capsys):
    with pytest.raises(SystemExit) as e:
        serving.parse_args(bad)
    assert e.value.code == 2 and "error" in capsys.readouterr().err
