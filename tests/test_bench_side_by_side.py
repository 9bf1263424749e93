"""bench.side_by_side: both workers run at once, every timed step began inside the common window
(set once both workers are ready), a worker that fails, is late to the barrier or begins no step in
the window is an error rather than a timing, the ratio is the median of the rounds', and the CLI
reports both checkouts (tiny shapes; the base is this checkout itself)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from bench import side_by_side

ROOT = Path(__file__).resolve().parent.parent
TINY = {"vocab": 64, "d_model": 16, "layers": 2, "seq_len": 16, "batch_size": 2, "threads": 1}


def test_pair_runs_both_models_in_the_same_window() -> None:
    window = 1.0
    began: dict[str, list[float]] = {}
    out = side_by_side.run_pair(ROOT, TINY, window=window, startup=300.0, began=began)
    assert set(out) == set(began) == {"sfdlm", "transformer"}
    for arch, ms in out.items():
        assert len(ms) == len(began[arch]) >= 1 and all(x > 0 for x in ms)
        # after the common start (the warm-up step is before the barrier), none begun after the window closed
        assert all(0 <= b < window for b in began[arch]), began[arch]


def test_a_worker_that_reaches_the_start_after_the_window_is_an_error() -> None:
    # a negative margin puts the common start, and the whole 1 ms window, before the workers hear of it
    with pytest.raises(SystemExit, match="began no step inside the 0.001 s window"):
        side_by_side.run_pair(ROOT, TINY, window=0.001, startup=300.0, margin=-1.0)


def test_a_worker_that_fails_or_is_not_ready_stops_the_round() -> None:
    with pytest.raises(SystemExit, match="(?s)(sfdlm|transformer) worker .* failed before its first step:.*Error"):
        side_by_side.run_pair(ROOT, {**TINY, "d_model": -16}, window=1.0, startup=300.0)
    with pytest.raises(SystemExit, match=r"not ready within 0\.01 s"):
        side_by_side.run_pair(ROOT, TINY, window=1.0, startup=0.01)


def test_summary_ratio_is_the_per_round_median() -> None:
    rounds = [{"sfdlm": [10.0, 10.0, 12.0], "transformer": [12.0]},
              {"sfdlm": [20.0], "transformer": [30.0, 30.0]},
              {"sfdlm": [10.0], "transformer": [11.0]}]
    s = side_by_side.summarise(rounds)
    assert s["round_ms"] == {"sfdlm": [10.0, 20.0, 10.0], "transformer": [12.0, 30.0, 11.0]}
    assert s["ratio_rounds"] == [1.2, 1.5, 1.1] and s["ratio"] == pytest.approx(1.2)
    assert s["steps"] == {"sfdlm": 5, "transformer": 4}
    assert s["step_ms"]["sfdlm"] == 10.0


def test_cli_reports_both_checkouts_and_rejects_a_non_checkout(tmp_path: Path) -> None:
    cmd = [sys.executable, "-m", "bench.side_by_side", "--d-model", "16", "--layers", "2", "--vocab", "64",
           "--seq-len", "16", "--batch-size", "2", "--window", "0.3", "--repeats", "1"]
    res = subprocess.run(cmd + ["--base", str(ROOT), "--json"], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr
    data = json.loads(res.stdout)
    for tag in ("this", "base"):
        assert data[tag]["ratio"] > 0 and data[tag]["steps"]["sfdlm"] >= 1
    assert set(data["this_over_base"]) == {"sfdlm", "transformer"}
    bad = subprocess.run(cmd + ["--base", str(tmp_path)], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert bad.returncode != 0 and "not a checkout" in bad.stderr
