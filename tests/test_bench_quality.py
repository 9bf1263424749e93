"""bench.quality: parallel runs, collection of finished and unfinished runs, the equal
wall-clock rule on a given CPU speed, and the target lines."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from bench import quality
from engine.tiny import SENTENCES


@pytest.fixture()
def corpus(tmp_path: Path) -> Path:
    d = tmp_path / "corpus"
    d.mkdir()
    for split, texts in (("train", SENTENCES * 3), ("validation", SENTENCES[:4])):
        (d / f"{split}.jsonl").write_text("".join(json.dumps({"text": t}) + "\n" for t in texts))
    return d


def _row(model: str, seed: int, bits: list[float], tokens_per_step: int = 100) -> dict:
    return {"model": model, "seed": seed, "tokens": tokens_per_step * 10 * len(bits), "batch_size": 10, "seq_len": 10,
            "train_seconds": 1.0, "curve": [{"step": 10 * (i + 1), "elapsed_s": float(i), "bits": b} for i, b in enumerate(bits)]}


def test_equal_wallclock_uses_the_cpu_speed_of_each_model() -> None:
    rows = [_row("sfdlm-uniform", 0, [9.0, 8.0, 7.0, 6.0]), _row("transformer-uniform", 0, [8.5, 7.5, 6.5, 5.5])]
    # SFDLM is twice as fast on this CPU: at its finishing time the transformer has done half its steps
    quality.equal_wallclock(rows, {"sfdlm-uniform": 200.0, "transformer-uniform": 100.0})
    assert rows[0]["bits_at_equal_wallclock"] == 6.0
    assert rows[1]["bits_at_equal_wallclock"] == 7.5
    lines = quality.targets(rows)
    assert any("equal wall-clock" in x and x.endswith(": met") for x in lines)
    quality.equal_wallclock(rows, {"sfdlm-uniform": 100.0, "transformer-uniform": 100.0})
    assert any("equal wall-clock" in x and "NOT met" in x for x in quality.targets(rows))


def test_equal_wallclock_interpolates_between_the_evaluations_around_the_time() -> None:
    """The faster model finishes at 25 s on this clock; the slower one was evaluated at 20 s (7.5)
    and 30 s (6.5): the last evaluation says 7.5, interpolation 7.0."""
    rows = [_row("sfdlm-uniform", 0, [9.0, 8.0, 7.0, 7.2]), _row("transformer-uniform", 0, [8.5, 7.5, 6.5, 5.5])]
    quality.equal_wallclock(rows, {"sfdlm-uniform": 160.0, "transformer-uniform": 100.0})
    assert rows[1]["bits_at_equal_wallclock"] == 7.5
    assert rows[1]["bits_at_equal_wallclock_interp"] == pytest.approx(7.0)
    assert rows[0]["bits_at_equal_wallclock_interp"] == 7.2  # its own last evaluation: nothing later
    lines = quality.targets(rows)
    assert any(x.startswith("bound at equal wall-clock:") and x.endswith(": met") for x in lines)
    assert any("interpolated" in x and "NOT met" in x for x in lines)  # 7.2 is not below 7.0
    for r in rows:
        r.update(parameters=1000, tokens_per_s=100.0)
    table = quality.table(rows).splitlines()
    assert table[0].endswith("| bits at equal wall-clock | the same, interpolated |")
    assert table[-1].endswith("| 7.500 | 7.000 |")


def test_a_run_recorded_with_zero_training_time_has_no_tokens_per_second() -> None:
    """A tiny run can finish under the clock's resolution: no division by zero, and the table
    shows a dash for its speed."""
    row = quality.trained_fields("causal", 0, 1000, 4, 10, 2, 8, "cpu", 0.0, [{"step": 10, "elapsed_s": 0.0, "nelbo_bits_per_token": 7.0}])
    assert row["tokens_per_s"] is None and row["train_seconds"] == 0.0
    assert quality.trained_fields("causal", 0, 1000, 4, 10, 2, 8, "cpu", 0.0004, [])["train_seconds"] == 0.0
    assert quality.trained_fields("causal", 0, 1000, 4, 10, 2, 8, "cpu", 0.0016, [])["train_seconds"] == 0.002
    quality.equal_wallclock([row])
    assert "| causal | 1,000 | 1 | 7.000 | 128.0 | — | — | — | — | — |" in quality.table([row])


def test_equal_wallclock_on_the_runs_clock_counts_the_fastest_runs_last_validation() -> None:
    """Checkpoints before the fifth session record train_seconds to 0.1 s while the last
    validation is logged to 0.01 s:
    the faster model's final bound is its value at equal wall-clock, not the one before it."""
    rows = [_row("sfdlm-uniform", 0, [9.0, 8.0, 7.0, 6.0]), _row("transformer-uniform", 0, [8.5, 7.5, 6.5, 5.5])]
    rows[0]["train_seconds"], rows[0]["curve"][-1]["elapsed_s"] = 3.0, 3.04
    rows[1]["train_seconds"] = 6.0
    for i, c in enumerate(rows[1]["curve"]):
        c["elapsed_s"] = 2.0 * (i + 1) - 0.5  # 1.5, 3.5, 5.5, 7.5
    quality.equal_wallclock(rows)
    assert rows[0]["bits_at_equal_wallclock"] == 6.0
    assert rows[1]["bits_at_equal_wallclock"] == 8.5


def test_equal_wallclock_on_the_runs_clock_is_each_seeds_own_race() -> None:
    """Seeds train on different days or machines: seed 1's time is its own fastest run's (40 s),
    not seed 0's (4 s), and a seed that misses is named even when the median meets."""
    rows = []
    for seed, scale, t_bits in ((0, 1.0, [8.5, 7.5, 6.5, 5.5]), (1, 10.0, [8.5, 7.5, 6.5, 5.5]), (2, 1.0, [8.5, 7.5, 6.5, 5.5])):
        sf, tr = _row("sfdlm-uniform", seed, [9.0, 8.0, 7.0, 6.0 if seed != 2 else 7.4]), _row("transformer-uniform", seed, t_bits)
        for r, speed_up in ((sf, 1.0), (tr, 2.0)):  # the transformer's steps take twice as long
            for i, c in enumerate(r["curve"]):
                c["elapsed_s"] = scale * speed_up * (i + 1)
            r["train_seconds"] = r["curve"][-1]["elapsed_s"]
        rows += [sf, tr]
    quality.equal_wallclock(rows)
    seed1 = [r for r in rows if r["seed"] == 1]
    assert all(r["equal_wallclock_s"] == 40.0 for r in seed1)
    assert seed1[1]["bits_at_equal_wallclock"] == 7.5  # step 20 at 40 s, not "no evaluation before 4 s"
    lines = quality.targets(rows)
    assert any(x.startswith("bound at equal wall-clock:") and x.endswith(": met") for x in lines)  # median 6.0 vs 7.5
    assert "  seed 2: 7.400 vs 7.500: met" in lines
    rows[4]["curve"][-1]["bits"] = 7.6
    rows[5]["curve"], rows[5]["tokens"] = rows[5]["curve"][:3], 300  # seed 2's transformer stopped at step 30
    assert any(x.startswith("seeds 2: the two runs stopped at different steps") for x in quality.targets(rows))
    quality.equal_wallclock(rows)
    assert "  seed 2: 7.600 vs 7.500: NOT met" in quality.targets(rows)


@pytest.mark.slow
def test_parallel_runs_then_collect_with_an_unscored_run(corpus: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "q"
    args = ["--data", str(corpus), "--out", str(out), "--tokens", "1200", "--d-model", "32", "--layers", "1", "--vocab", "300",
            "--seq-len", "24", "--batch-size", "2", "--eval-every", "10", "--warmup-steps", "2", "--threads", "1"]
    assert quality.main([*args, "--models", "sfdlm-uniform,transformer-uniform", "--seeds", "0", "--jobs", "2"]) == 0
    table = capsys.readouterr().out
    assert "| sfdlm-uniform |" in table and "| transformer-uniform |" in table and "perplexity bound at equal tokens" in table
    rows = json.loads((out / "results.json").read_text())
    assert {r["model"] for r in rows} == {"sfdlm-uniform", "transformer-uniform"}
    assert all(r["pin_preservation"] == 1.0 and r["tokens"] == 25 * 48 for r in rows)
    # a run whose scoring never finished is still tabulated from its validation curve
    (out / "transformer-uniform-seed0" / "row.json").unlink()
    shutil.rmtree(out / "transformer-uniform-seed0" / "model")
    (out / "speed.json").write_text(json.dumps({"sfdlm-uniform": 1000.0, "transformer-uniform": 1000.0}))
    assert quality.main([*args, "--seeds", "0", "--collect", "--speed", str(out / "speed.json")]) == 0
    text = capsys.readouterr().out
    line = next(x for x in text.splitlines() if x.startswith("| transformer-uniform"))
    assert "—" in line  # no scored bound, no infill
    rows = json.loads((out / "results.json").read_text())
    tr = next(r for r in rows if r["model"] == "transformer-uniform")
    assert tr["scored"] is False and tr["curve"] and tr["parameters"] > 0 and tr["cpu_tokens_per_s"] == 1000.0
    # train now, score later: the table first shows the curve only, then the scored row
    args2 = [*args, "--models", "causal", "--seeds", "3"]
    assert quality.main([*args2, "--no-score"]) == 0
    assert not (out / "causal-seed3" / "row.json").exists() and (out / "causal-seed3" / "model").is_dir()
    assert "| causal |" in capsys.readouterr().out
    # a run whose process fails (here: its weights damaged before scoring) fails the command, and
    # the table still shows what there is
    weights = out / "causal-seed3" / "model" / "weights.pt"
    good = weights.read_bytes()
    weights.write_bytes(good[:-10] + b"0123456789")
    assert quality.main([*args2, "--score", "--jobs", "2"]) == 1
    out_text = capsys.readouterr().out
    assert "failed runs (see their stderr.log): causal-seed3" in out_text and "| causal |" in out_text
    weights.write_bytes(good)
    assert quality.main([*args2, "--score", "--jobs", "2"]) == 0
    row = json.loads((out / "causal-seed3" / "row.json").read_text())
    assert row["tokens"] == 25 * 48 and row["nelbo_bits_per_token"] > 0 and row["curve"]
    capsys.readouterr()
    assert quality.main([*args, "--measure-speed", str(tmp_path / "s.json"), "--models", "causal"]) == 0
    assert json.loads((tmp_path / "s.json").read_text())["causal"] > 0


def test_an_existing_tokenizer_of_another_size_is_reused_and_reported(tmp_path: Path, capsys) -> None:
    from engine.tokenizer import Tokenizer
    texts = list(SENTENCES) * 20
    first = quality._ensure_tokenizer(texts, tmp_path, 300)
    assert (tmp_path / "tokenizer.json").is_file()
    capsys.readouterr()
    again = quality._ensure_tokenizer(texts, tmp_path, first.vocab_size)
    assert again.vocab_size == first.vocab_size and "note:" not in capsys.readouterr().err
    other = quality._ensure_tokenizer(texts, tmp_path, 4096)  # asks for another size: reused, reported
    assert other.vocab_size == first.vocab_size == Tokenizer.load(tmp_path / "tokenizer.json").vocab_size
    err = capsys.readouterr().err
    assert "reusing" in err and "4,096 ids" in err and "another --out" in err


@pytest.mark.slow
def test_an_interrupted_run_resumes_where_it_stopped(corpus: Path, tmp_path: Path, monkeypatch, capsys) -> None:
    """A run killed mid-way (its state saved at a tenth of the budget, log rows written past it)
    continues from the saved state: the same weights as a run never interrupted, and every
    validation step in its log once. A state of other settings is not resumed."""
    import torch

    from engine.config import ModelConfig, TrainConfig
    from engine.train import load_texts

    train_texts, val_texts = load_texts(corpus)
    tok = quality._ensure_tokenizer(train_texts, tmp_path, 300)
    base = ModelConfig(vocab_size=300, d_model=32, n_layers=1, d_state=8, fourier_blocks=2, n_heads=2, time_dim=16)
    tcfg = TrainConfig(seq_len=24, batch_size=2, eval_every=5, warmup_steps=2)

    def one(out: Path) -> Path:
        quality.run_one("sfdlm-uniform", 0, train_texts, val_texts, out, tok, 1200, base, tcfg, score=False)
        return quality.run_path(out, "sfdlm-uniform", 0)

    straight = one(tmp_path / "a")
    real = quality.train
    monkeypatch.setattr(quality, "train", lambda *a, **k: real(*a, **k, stop_after=12))
    cut = one(tmp_path / "b")
    monkeypatch.setattr(quality, "train", real)
    assert torch.load(cut / "train_state.pt", weights_only=True)["step"] == 12
    with (cut / "log.jsonl").open("a") as f:  # what the killed process logged after its last save
        f.write(json.dumps({"eval": {"step": 15, "nelbo_bits_per_token": 99.0, "elapsed_s": 9.0}}) + "\n")
    capsys.readouterr()
    one(tmp_path / "b")
    assert "resuming at step 12" in capsys.readouterr().err
    a, b = (torch.load(d / "train_state.pt", weights_only=True) for d in (straight, cut))
    assert b["step"] == 25 and all(torch.equal(a["model"][k], b["model"][k]) for k in a["model"])
    steps = [r["step"] for r in quality.read_curve(cut)]
    assert steps == [r["step"] for r in quality.read_curve(straight)] == [5, 10, 15, 20, 25]
    assert 99.0 not in [r["nelbo_bits_per_token"] for r in quality.read_curve(cut)]
    # the same folder asked for another budget: the old state is not resumed
    quality.run_one("sfdlm-uniform", 0, train_texts, val_texts, tmp_path / "b", tok, 2400, base, tcfg, score=False)
    assert "starting afresh" in capsys.readouterr().err
    assert torch.load(cut / "train_state.pt", weights_only=True)["step"] == 50
