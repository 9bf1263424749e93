"""The training loop: it learns, writes a loadable model folder, resumes exactly, trains every
architecture and objective, fine-tunes, and keeps DDP processes in step."""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from engine import checkpoint
from engine.config import DiffusionConfig, TrainConfig
from engine.tiny import SENTENCES, build_tiny_tokenizer, tiny_config
from engine.checkpoint import diffusion_for
from engine.train import Setup, eval_windows, evaluate_loss, main, token_stream, train

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def tok():
    return build_tiny_tokenizer()


@pytest.fixture()
def data_dir(tmp_path: Path) -> Path:
    d = tmp_path / "docs"
    d.mkdir()
    for i, s in enumerate(SENTENCES):
        (d / f"r{i}.txt").write_text(s)
    return d


def _setup(tok, arch: str = "sfdlm", noise: str = "uniform", steps: int = 6) -> Setup:
    tcfg = TrainConfig(seq_len=24, batch_size=2, lr=3e-3, warmup_steps=2, max_steps=steps, eval_every=3, seed=5)
    return Setup(tiny_config(tok.vocab_size).__class__(**{**tiny_config(tok.vocab_size).__dict__, "arch": arch}),
                 DiffusionConfig(noise=noise), tcfg, tok)


def _weights(folder: Path) -> dict[str, torch.Tensor]:
    return torch.load(folder / "train_state.pt", weights_only=True)["model"]


def test_writes_a_loadable_model_and_a_log(tok, tmp_path: Path) -> None:
    texts = list(SENTENCES)
    metrics = train(_setup(tok), texts, texts[:3], tmp_path / "run", log_every=2)
    ck = checkpoint.load(tmp_path / "run" / "model")
    assert ck.meta["step"] == 6 and ck.meta["tokens_seen"] == 6 * 2 * 24
    assert metrics["step"] == 6 and metrics["nelbo_bits_per_token"] > 0
    rows = [json.loads(x) for x in (tmp_path / "run" / "log.jsonl").read_text().splitlines()]
    assert any("eval" in r for r in rows) and any("tokens_per_s" in r for r in rows)


def test_resume_continues_exactly(tok, tmp_path: Path) -> None:
    texts = list(SENTENCES)
    train(_setup(tok), texts, [], tmp_path / "straight")
    train(_setup(tok), texts, [], tmp_path / "split", stop_after=3)
    assert torch.load(tmp_path / "split" / "train_state.pt", weights_only=True)["step"] == 3
    train(_setup(tok), texts, [], tmp_path / "split", resume=True)
    a, b = _weights(tmp_path / "straight"), _weights(tmp_path / "split")
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)
    # and the run did move the weights
    c = torch.load(tmp_path / "split" / "train_state.pt", weights_only=True)
    assert c["step"] == 6


@pytest.mark.parametrize(("arch", "noise"), [("sfdlm", "absorbing"), ("transformer", "uniform"), ("causal", "uniform")])
def test_every_architecture_and_objective_trains(tok, tmp_path: Path, arch: str, noise: str) -> None:
    m = train(_setup(tok, arch, noise, steps=3), list(SENTENCES), list(SENTENCES[:2]), tmp_path / arch)
    assert m["nelbo_bits_per_token"] > 0
    assert checkpoint.load(tmp_path / arch / "model").model_cfg.arch == arch


@pytest.mark.slow
def test_loss_goes_down_on_repeated_text(tok, tmp_path: Path) -> None:
    s = _setup(tok, steps=60)
    texts = list(SENTENCES[:2])
    train(s, texts, [], tmp_path / "a", stop_after=1)
    first = checkpoint.load(tmp_path / "a" / "model")
    last = train(s, texts, texts, tmp_path / "a", resume=True)
    data = eval_windows(token_stream(texts, tok), 24, 8)
    diffusion = diffusion_for(s.diffusion_cfg, tok.vocab_size, tok)
    before = evaluate_loss(first.model, "sfdlm", diffusion, data, 2)
    assert last["nelbo_bits_per_token"] < 0.8 * before["nelbo_bits_per_token"]


def test_cli_trains_tokenizer_and_fine_tunes(data_dir: Path, tmp_path: Path, capsys) -> None:
    cfg = tmp_path / "cfg.json"
    cfg.write_text(json.dumps({"model": {"d_model": 32, "n_layers": 2, "d_state": 8, "fourier_blocks": 2, "n_heads": 2, "time_dim": 16},
                               "train": {"seq_len": 16, "batch_size": 2, "warmup_steps": 1}}))
    assert main(["--data", str(data_dir), "--out", str(tmp_path / "base"), "--config", str(cfg), "--vocab-size", "300",
                 "--max-steps", "2", "--log-every", "1"]) == 0
    base = checkpoint.load(tmp_path / "base" / "model")
    assert base.tokenizer.vocab_size == 300 and base.model_cfg.d_model == 32
    # fine-tuning with a zero learning rate must start from (and so keep) the base weights
    assert main(["--data", str(data_dir), "--out", str(tmp_path / "ft"), "--init-from", str(tmp_path / "base" / "model"),
                 "--max-steps", "1", "--lr", "0", "--warmup-steps", "1", "--seq-len", "16", "--batch-size", "2"]) == 0
    ft = checkpoint.load(tmp_path / "ft" / "model")
    assert ft.tokenizer.to_json() == base.tokenizer.to_json()
    sb, sf = base.model.state_dict(), ft.model.state_dict()
    assert all(torch.equal(sb[k], sf[k]) for k in sb)
    # fine-tuning keeps the architecture and the tokenizer: asking for others is refused by name
    for bad, named in ((["--d-model", "64"], "--d-model 64 (the model has 32)"),
                       (["--arch", "transformer"], "--arch/--objective 'transformer' (the model has 'sfdlm')"),
                       (["--vocab-size", "400"], "own tokenizer")):
        with pytest.raises(SystemExit) as exc:
            main(["--data", str(data_dir), "--out", str(tmp_path / "ft-bad"), "--init-from", str(tmp_path / "base" / "model"),
                  "--max-steps", "1", *bad])
        assert exc.value.code == 2 and named in capsys.readouterr().err
    assert not (tmp_path / "ft-bad").exists()


def test_cli_bad_input_exits_2(tmp_path: Path, capsys) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(SystemExit) as exc:
        main(["--data", str(empty), "--out", str(tmp_path / "o")])
    assert exc.value.code == 2
    assert "no training documents" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exc:
        main(["--data", str(empty), "--out", str(tmp_path / "o"), "--init-from", str(tmp_path / "missing")])
    assert exc.value.code == 2 and "not found" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exc:
        main(["--data", str(empty), "--out", str(tmp_path / "o"), "--resume"])
    assert exc.value.code == 2 and "no train_state.pt" in capsys.readouterr().err


def test_cli_says_when_there_is_no_validation_split(tmp_path: Path, capsys) -> None:
    """A prepared corpus whose validation split is empty trains, and says that no validation
    bound will be measured; evaluating an empty split names the split instead of a bare error."""
    from engine.evaluate import main as evaluate_main
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    (corpus / "train.jsonl").write_text("".join(json.dumps({"text": s}) + "\n" for s in SENTENCES))
    (corpus / "validation.jsonl").write_text("")
    (corpus / "test.jsonl").write_text("")
    cfg = tmp_path / "cfg.json"
    cfg.write_text(json.dumps({"model": {"d_model": 32, "n_layers": 2, "d_state": 8, "fourier_blocks": 2, "time_dim": 16},
                               "train": {"seq_len": 16, "batch_size": 2, "warmup_steps": 1}}))
    assert main(["--data", str(corpus), "--out", str(tmp_path / "run"), "--config", str(cfg), "--vocab-size", "300",
                 "--max-steps", "2", "--keep-best"]) == 0
    err = capsys.readouterr().err
    assert "no validation documents" in err and "--keep-best keeps nothing" in err
    assert evaluate_main(["--model", str(tmp_path / "run" / "model"), "--data", str(corpus), "--split", "test"]) == 2
    assert "the test split of" in capsys.readouterr().err


def test_cli_resume_takes_the_runs_own_settings(data_dir: Path, tmp_path: Path, capsys) -> None:
    """A run resumed with no flags continues with its own model and training settings (not the
    defaults, which would not even load); a flag that would change the run is refused by name,
    before anything is written; how long it trains may change."""
    cfg = tmp_path / "cfg.json"
    cfg.write_text(json.dumps({"model": {"d_model": 32, "n_layers": 2, "d_state": 8, "fourier_blocks": 2, "n_heads": 2, "time_dim": 16},
                               "train": {"seq_len": 16, "batch_size": 2, "warmup_steps": 1}}))
    out = tmp_path / "run"
    assert main(["--data", str(data_dir), "--out", str(out), "--config", str(cfg), "--vocab-size", "300",
                 "--max-steps", "2", "--lr", "0.002"]) == 0
    before = (out / "train_state.pt").read_bytes()
    for bad, named in ((["--seq-len", "32"], "--seq-len 32 (the run has 16)"),
                       (["--d-model", "64", "--lr", "0.1"], "--d-model 64 (the run has 32), --lr 0.1 (the run has 0.002)"),
                       (["--vocab-size", "400"], "--vocab-size")):
        with pytest.raises(SystemExit) as exc:
            main(["--data", str(data_dir), "--out", str(out), "--resume", "--max-steps", "4", *bad])
        assert exc.value.code == 2
        assert named in capsys.readouterr().err
        assert (out / "train_state.pt").read_bytes() == before  # nothing was touched
    assert main(["--data", str(data_dir), "--out", str(out), "--resume", "--max-steps", "4"]) == 0
    ck = checkpoint.load(out / "model")
    assert ck.meta["step"] == 4 and ck.model_cfg.d_model == 32 and ck.tokenizer.vocab_size == 300
    assert ck.meta["train_config"]["seq_len"] == 16 and ck.meta["train_config"]["lr"] == 0.002
    assert ck.meta["tokens_seen"] == 4 * 2 * 16


@pytest.mark.slow
@pytest.mark.parametrize("noise", ["uniform", "absorbing"])
def test_two_ddp_processes_stay_in_step(data_dir: Path, tmp_path: Path, noise: str) -> None:
    """Both noises' fused head + loss under DDP (the head weights' gradient reaches the reducer
    outside the wrapped forward; under absorbing noise a rank may have no masked position)."""
    cfg = tmp_path / "cfg.json"
    cfg.write_text(json.dumps({"model": {"d_model": 32, "n_layers": 2, "d_state": 8, "fourier_blocks": 2, "n_heads": 2, "time_dim": 16},
                               "train": {"seq_len": 16, "batch_size": 2, "warmup_steps": 1, "max_steps": 3}}))
    out = tmp_path / "ddp"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                           "-m", "engine.train", "--data", str(data_dir), "--out", str(out), "--config", str(cfg),
                           "--vocab-size", "300", "--device", "cpu", "--threads", "1", "--noise", noise],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    r0 = torch.load(out / "train_state.pt", weights_only=True)
    r1 = torch.load(out / "train_state.rank1.pt", weights_only=True)
    assert all(torch.equal(r0["model"][k], r1["model"][k]) for k in r0["model"])  # in step
    assert not torch.equal(r0["rng"]["data"], r1["rng"]["data"])  # yet each read its own windows
    ck = checkpoint.load(out / "model")
    assert ck.meta["world_size"] == 2 and ck.diffusion_cfg.noise == noise


def test_evaluate_reports_bound_infill_and_exact_pin_preservation(tok, tmp_path: Path, data_dir: Path, capsys) -> None:
    from engine.evaluate import main as evaluate_main
    from engine.evaluate import span_pins

    train(_setup(tok, steps=2), list(SENTENCES), [], tmp_path / "run")
    rc = evaluate_main(["--model", str(tmp_path / "run" / "model"), "--data", str(data_dir), "--json", "--seq-len", "24",
                        "--max-windows", "4", "--infill-windows", "2", "--steps", "3", "--mc", "1", "--samples", "1"])
    assert rc == 0
    rep = json.loads(capsys.readouterr().out)
    assert rep["pin_preservation"] == 1.0
    assert set(rep["infill_accuracy"]) == {"0.15", "0.5", "0.85"}
    assert all(0.0 <= v <= 1.0 for v in rep["infill_accuracy"].values())
    assert rep["tokens"] > 0 and rep["ppl_bound"] == pytest.approx(2 ** rep["nelbo_bits_per_token"])
    assert len(rep["samples"]) == 1
    g = torch.Generator().manual_seed(0)
    for frac in (0.15, 0.5, 0.85):
        m = span_pins(100, frac, g)
        assert int(m.sum()) == round(frac * 100)


def test_evaluate_causal_reports_exact_perplexity(tok, tmp_path: Path, data_dir: Path, capsys) -> None:
    from engine.evaluate import main as evaluate_main

    train(_setup(tok, "causal", steps=2), list(SENTENCES), [], tmp_path / "ar")
    assert evaluate_main(["--model", str(tmp_path / "ar" / "model"), "--data", str(data_dir), "--json", "--seq-len", "24",
                          "--max-windows", "4", "--samples", "1"]) == 0
    rep = json.loads(capsys.readouterr().out)
    assert rep["infill_accuracy"] is None and rep["ppl_bound"] > 1
    assert evaluate_main(["--model", str(tmp_path / "nope"), "--data", str(data_dir)]) == 2


def test_keep_best_keeps_the_model_with_the_lowest_validation_bound(tok, tmp_path: Path) -> None:
    texts = list(SENTENCES)
    setup = _setup(tok, steps=8)
    setup = dataclasses.replace(setup, train_cfg=dataclasses.replace(setup.train_cfg, eval_every=2))
    train(setup, texts, texts[:3], tmp_path / "run", keep_best=True)
    evals = [json.loads(x)["eval"] for x in (tmp_path / "run" / "log.jsonl").read_text().splitlines() if '"eval"' in x]
    best = min(evals, key=lambda e: e["nelbo_bits_per_token"])
    ck = checkpoint.load(tmp_path / "run" / "best")
    assert ck.meta["step"] == best["step"]
    assert ck.meta["validation"]["nelbo_bits_per_token"] == best["nelbo_bits_per_token"]
    # the kept weights score exactly that bound again on the same windows
    val = eval_windows(token_stream(texts[:3], tok), 24, 64)
    again = evaluate_loss(ck.model, "sfdlm", diffusion_for(setup.diffusion_cfg, tok.vocab_size, tok), val, 2)
    assert again["nelbo_bits_per_token"] == pytest.approx(best["nelbo_bits_per_token"], rel=1e-5)


def test_time_budget_ends_the_run_validates_and_anneals(tok, tmp_path: Path) -> None:
    from engine.train import lr_at
    texts = list(SENTENCES)
    setup = _setup(tok, steps=10_000)
    setup = dataclasses.replace(setup, train_cfg=dataclasses.replace(setup.train_cfg, max_seconds=1.0, eval_every=10_000))
    metrics = train(setup, texts, texts[:3], tmp_path / "run")
    ck = checkpoint.load(tmp_path / "run" / "model")
    assert 1 <= ck.meta["step"] < 10_000 and ck.meta["train_seconds"] >= 1.0
    assert metrics["step"] == ck.meta["step"]  # validated where the budget ended it
    cfg = setup.train_cfg
    assert lr_at(cfg.warmup_steps + 1, cfg, elapsed=cfg.max_seconds) == pytest.approx(0.1 * cfg.lr)
    assert lr_at(cfg.warmup_steps + 1, cfg, elapsed=0.5 * cfg.max_seconds) == pytest.approx(0.55 * cfg.lr, rel=1e-3)
