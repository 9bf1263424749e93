"""bench.compare_commits: which JSON leaves count as figures, and the refusal of a bad checkout."""

from __future__ import annotations

import pytest

from bench.compare_commits import flatten, main


def test_flatten_keeps_timings_and_memory_named_by_row():
    data = [{"L": 256, "sfdlm_ms": 14.5, "peak_mb": 3.0, "break_even_steps": 10, "live_mb": None,
             "diffusion_ms": {"32": 75.0}, "skipped_mb": -1.0, "flag_ms": True}]
    assert dict(flatten(data)) == {"L=256.sfdlm_ms": 14.5, "L=256.peak_mb": 3.0, "L=256.diffusion_ms.32": 75.0}
    assert dict(flatten({"first_step_ms_median": 2, "runs": 3, "cpus": 2})) == {"first_step_ms_median": 2.0}


def test_a_folder_without_bench_is_refused_in_one_line(tmp_path, capsys):
    with pytest.raises(SystemExit) as e:
        main(["--base", str(tmp_path), "--bench", "scaling", "--lengths 64"])
    assert e.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "has no bench/ folder" in err[0]
