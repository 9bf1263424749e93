"""The comparison the paper invites: SFDLM (uniform noise), SFDLM (absorbing), the transformer
denoiser (uniform) and the causal transformer, on the same data, tokenizer and token budget, at
(nearly) equal parameter count.

`python -m bench.quality --data data/corpus [--tokens 2000000] [--seeds 0] [--json] [--out DIR]`

Each model trains through engine.train with the same windows per step and steps, validating on
the same fixed windows every --eval-every steps (the ELBO estimate of the training loop, one
time draw per window); then engine.evaluate scores the final model on the validation split
(bound with reconstruction term, infill at 15/50/85 % pinned). Equal wall-clock: each model's
validation bound at the last evaluation no later than the time the faster of SFDLM-uniform and
the transformer denoiser needs for the whole budget, on that machine's clock or (--speed) on the
CPU's clock measured by --measure-speed, and the bound interpolated in time between the
evaluations on either side of that time (the last evaluation before it favours the faster model
by up to one evaluation interval). Parameters are matched by widening the transformers'
channel MLP (mlp_mult) to the SFDLM's count.

Runs: --jobs N trains N runs at a time in separate processes (e.g. side by side on one GPU with
--device cuda); --no-score trains only and --score scores the trained runs afterwards (so the
scoring, CPU work, can get all the cores); --collect tabulates what is in --out, including runs
whose scoring never finished (from their validation curves). Finished work is never redone, and
a run interrupted mid-way continues from its last saved state (saved every tenth of the budget).
When a run's process fails, the command still prints the table of what finished, names the
failed runs (their stderr.log says why) and exits 1.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import statistics
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from engine import checkpoint
from engine.build import build_model, count_parameters
from engine.cli import Parser
from engine.config import DiffusionConfig, ModelConfig, TrainConfig, to_dict
from engine.evaluate import evaluate
from engine.tokenizer import Tokenizer
from engine.train import STATE, Setup, TrainError, load_texts, resumed_sections, train

VARIANTS = (("sfdlm-uniform", "sfdlm", "uniform"), ("sfdlm-absorbing", "sfdlm", "absorbing"),
            ("transformer-uniform", "transformer", "uniform"), ("causal", "causal", "uniform"))
ARCH_NOISE = {name: (arch, noise) for name, arch, noise in VARIANTS}
PAIR = ("sfdlm-uniform", "transformer-uniform")  # the two models the targets compare


def run_path(out: Path, name: str, seed: int) -> Path:
    return out / f"{name}-seed{seed}"


def read_curve(run_dir: Path) -> list[dict[str, Any]]:
    """The validation rows of a run's log.jsonl (empty when there is none)."""
    if not (run_dir / "log.jsonl").is_file():
        return []
    return [json.loads(x)["eval"] for x in (run_dir / "log.jsonl").read_text().splitlines() if '"eval"' in x]


def trained_fields(name: str, seed: int, parameters: int, mlp_mult: int, steps: int, batch: int, seq_len: int,
                   device: str | None, wall: float, curve: list[dict[str, Any]]) -> dict[str, Any]:
    """The part of a result row that training alone determines (scored and unscored rows share it)."""
    return {"model": name, "seed": seed, "parameters": parameters, "mlp_mult": mlp_mult,
            "tokens": steps * batch * seq_len, "batch_size": batch, "seq_len": seq_len,
            "device": device, "train_seconds": round(wall, 3),
            "tokens_per_s": round(steps * batch * seq_len / wall, 1) if wall > 0 else None,
            "curve": [{"elapsed_s": c.get("elapsed_s"), "step": c["step"], "bits": c["nelbo_bits_per_token"]} for c in curve]}


def matched(base: ModelConfig, arch: str) -> ModelConfig:
    """`base` with arch set and mlp_mult chosen so the parameter count is closest to the SFDLM's."""
    target = count_parameters(build_model(dataclasses.replace(base, arch="sfdlm")))
    if arch == "sfdlm":
        return dataclasses.replace(base, arch=arch)
    options = [dataclasses.replace(base, arch=arch, mlp_mult=m) for m in range(1, 17)]
    return min(options, key=lambda c: abs(count_parameters(build_model(c)) - target))


def _ensure_tokenizer(train_texts: Sequence[str], out: Path, vocab: int) -> Tokenizer:
    """OUT/tokenizer.json, trained with `vocab` ids when absent. An existing one is always reused
    (every run in OUT must share it), and a size other than `vocab` is reported, since the
    comparison then runs on that tokenizer, not on one of the size asked for."""
    tok_path = out / "tokenizer.json"
    if tok_path.is_file():
        tok = Tokenizer.load(tok_path)
        if tok.vocab_size != vocab:
            print(f"note: reusing {tok_path} ({tok.vocab_size:,} ids), not a tokenizer of {vocab:,} ids as "
                  f"--vocab asks; use another --out for another vocabulary", file=sys.stderr, flush=True)
        return tok
    out.mkdir(parents=True, exist_ok=True)
    tok = Tokenizer.train(train_texts, vocab_size=vocab)
    tok.save(tok_path)
    return tok


def run_one(name: str, seed: int, train_texts: Sequence[str], val_texts: Sequence[str], out: Path, tok: Tokenizer,
            tokens: int, base: ModelConfig, tcfg: TrainConfig, device: str = "cpu", score: bool = True) -> dict[str, Any] | None:
    """Train one (variant, seed) into OUT/NAME-seedS, then score it (score_run). A run whose model
    already holds the whole budget is not trained again, and a scored one (row.json) is not
    touched, so an interrupted sweep can be re-run. With score=False the scoring is left for a
    later `--score` pass (returns None)."""
    arch, noise = ARCH_NOISE[name]
    run_dir = run_path(out, name, seed)
    if (run_dir / "row.json").is_file():
        return json.loads((run_dir / "row.json").read_text())
    steps = max(1, tokens // (tcfg.batch_size * tcfg.seq_len))
    mcfg = matched(dataclasses.replace(base, vocab_size=tok.vocab_size), arch)
    done = (run_dir / "model" / "manifest.json").is_file() and checkpoint.load(run_dir / "model").meta.get("step") == steps
    if not done:
        setup = Setup(mcfg, DiffusionConfig(noise=noise), dataclasses.replace(tcfg, max_steps=steps, seed=seed), tok)
        resume = _resumable(run_dir, setup)
        train(setup, train_texts, val_texts, run_dir, log_every=max(1, steps // 20), name=name, device=device,
              resume=resume, save_every=max(1, steps // 10))
    return score_run(run_dir, val_texts, name, seed) if score else None


def _resumable(run_dir: Path, setup: Setup) -> bool:
    """True when run_dir holds an interrupted run of exactly this setup (runs save their state
    every tenth of the budget), which then continues where it stopped. A state of other settings
    is cleared, with a note, so that the run starts afresh."""
    if not (run_dir / STATE).is_file():
        return False
    try:
        saved = resumed_sections(run_dir, {})
        same = saved == {"model": to_dict(setup.model_cfg), "diffusion": to_dict(setup.diffusion_cfg),
                         "train": to_dict(setup.train_cfg)}
    except TrainError:
        same = False
    if not same:
        print(f"{run_dir.name}: an earlier run with other settings is there; starting afresh", file=sys.stderr, flush=True)
        for name in (STATE, "log.jsonl"):
            (run_dir / name).unlink(missing_ok=True)
    return same


def score_run(run_dir: Path, val_texts: Sequence[str], name: str, seed: int) -> dict[str, Any]:
    """engine.evaluate on a trained run (on the CPU, whatever it trained on): row.json."""
    ck = checkpoint.load(run_dir / "model")
    tc = ck.meta["train_config"]
    seq_len = int(tc["seq_len"])
    rep = evaluate(ck, val_texts, seq_len=seq_len, max_windows=64, infill_windows=16, steps=32, mc=2, n_samples=1, seed=seed)
    # train_seconds: optimizer steps only, validation excluded
    row = trained_fields(name, seed, count_parameters(ck.model), ck.model_cfg.mlp_mult, int(ck.meta["step"]), int(tc["batch_size"]),
                         seq_len, ck.meta.get("device"), float(ck.meta["train_seconds"]), read_curve(run_dir))
    row |= {"nelbo_bits_per_token": rep["nelbo_bits_per_token"], "ppl_bound": rep["ppl_bound"],
            "infill_accuracy": rep["infill_accuracy"], "pin_preservation": rep["pin_preservation"], "sample": rep["samples"][0]}
    (run_dir / "row.json").write_text(json.dumps(row, indent=2))
    return row


def partial_row(run_dir: Path, base: ModelConfig, tcfg: TrainConfig, vocab_size: int) -> dict[str, Any] | None:
    """A row from a run's log alone (trained, but the final scoring did not finish): the validation
    curve and training time, with the scoring fields None. None when the log has no validation."""
    name, _, seed = run_dir.name.rpartition("-seed")
    curve = read_curve(run_dir)
    if name not in ARCH_NOISE or not curve:
        return None
    mcfg = matched(dataclasses.replace(base, vocab_size=vocab_size), ARCH_NOISE[name][0])
    row = trained_fields(name, int(seed), count_parameters(build_model(mcfg)), mcfg.mlp_mult, curve[-1]["step"], tcfg.batch_size,
                         tcfg.seq_len, None, float(curve[-1]["elapsed_s"]), curve)
    return row | {"nelbo_bits_per_token": None, "ppl_bound": None, "infill_accuracy": None, "pin_preservation": None,
                  "sample": None, "scored": False}


def gather(out: Path, base: ModelConfig, tcfg: TrainConfig, models: Sequence[str], seeds: Sequence[int], vocab: int) -> list[dict[str, Any]]:
    """Every run in `out` of these models and seeds: its row.json, or a partial row from its log."""
    if (out / "tokenizer.json").is_file():
        vocab = Tokenizer.load(out / "tokenizer.json").vocab_size
    rows = []
    for d in sorted(p for p in out.glob("*-seed*") if p.is_dir()):
        row = json.loads((d / "row.json").read_text()) if (d / "row.json").is_file() else partial_row(d, base, tcfg, vocab)
        if row is not None and row["model"] in models and row["seed"] in seeds:
            rows.append(row)
    return rows


def measure_speed(base: ModelConfig, tcfg: TrainConfig, tok: Tokenizer, variants: Sequence[str], train_texts: Sequence[str],
                  steps: int = 12, warmup: int = 3, device: str = "cpu") -> dict[str, float]:
    """Training tokens/s of each variant on this machine (median step time after warm-up), measured
    alternately in one process so that all variants see the same machine state."""
    from engine.checkpoint import diffusion_for
    from engine.train import optimizer_step, token_stream, windows
    stream = token_stream(train_texts[:2000], tok)
    nets = {}
    for name, arch, noise in VARIANTS:
        if name in variants:
            torch.manual_seed(0)
            model = build_model(matched(dataclasses.replace(base, vocab_size=tok.vocab_size), arch)).to(device)
            nets[name] = (model, arch, diffusion_for(DiffusionConfig(noise=noise), tok.vocab_size, tok),
                          torch.optim.AdamW(model.parameters(), lr=1e-4))
    times: dict[str, list[float]] = {n: [] for n in nets}
    gen_data = torch.Generator().manual_seed(0)
    gen_noise = torch.Generator(device=device).manual_seed(1)
    for i in range(warmup + steps):
        for name, (model, arch, diffusion, opt) in nets.items():
            x0 = windows(stream, tcfg.seq_len, tcfg.batch_size, gen_data).to(device)
            t0 = time.perf_counter()
            optimizer_step(model, arch, diffusion, opt, x0, gen_noise, tcfg.clean_prob, tcfg.grad_clip)
            if device.startswith("cuda"):
                torch.cuda.synchronize()
            if i >= warmup:
                times[name].append(time.perf_counter() - t0)
    return {n: round(tcfg.batch_size * tcfg.seq_len / statistics.median(ts), 1) for n, ts in times.items()}


def equal_wallclock(rows: list[dict[str, Any]], speed: dict[str, float] | None = None) -> None:
    """Set each row's bits_at_equal_wallclock: its validation bound at the last evaluation no later
    than the time the faster of SFDLM-uniform and the transformer denoiser (PAIR, the models the
    target compares; the fastest of all models when either is missing) needed for the whole
    budget. With `speed` (training tokens/s per model measured on the CPU, --measure-speed) the
    clock is that CPU's; otherwise the run's own. Each seed is its own race: the runs of a seed
    trained side by side, so the time is that seed's fastest run, never another seed's (a seed
    trained on a faster machine or day would otherwise set every seed's time).

    The last evaluation before that time can lie up to one evaluation interval earlier, which
    favours the faster model; bits_at_equal_wallclock_interp is the bound interpolated linearly
    in time between the evaluations on either side (the last one when none comes later)."""
    def clock(r: dict[str, Any], c: dict[str, Any]) -> float | None:
        if speed is not None:
            return c["step"] * r["batch_size"] * r["seq_len"] / speed[r["model"]]
        return c["elapsed_s"]
    total = {id(r): (r["tokens"] / speed[r["model"]] if speed is not None else r["train_seconds"]) for r in rows}
    fastest: dict[int, float] = {}  # per seed: its runs raced side by side
    for seed in {r["seed"] for r in rows}:
        race = [r for r in rows if r["seed"] == seed]
        have_pair = {r["model"] for r in race} >= set(PAIR)
        fastest[seed] = min(total[id(r)] for r in race if r["model"] in PAIR or not have_pair)
    for r in rows:
        # + 0.05 s: checkpoints of older code record train_seconds to 0.1 s (current ones to
        # 1 ms), and the fastest model's own last validation (logged at 0.01 s) must count
        limit = fastest[r["seed"]]
        cut = limit + 0.05 + 1e-9
        timed = [(t, c["bits"]) for c in r["curve"] if (t := clock(r, c)) is not None]
        early = [(t, b) for t, b in timed if t <= cut]
        late = [(t, b) for t, b in timed if t > cut]
        r["bits_at_equal_wallclock"] = early[-1][1] if early else None
        if early and late:
            (t0, b0), (t1, b1) = early[-1], late[0]
            w = min(1.0, max(0.0, (limit - t0) / (t1 - t0)))
            r["bits_at_equal_wallclock_interp"] = b0 + w * (b1 - b0)
        else:
            r["bits_at_equal_wallclock_interp"] = r["bits_at_equal_wallclock"]
        r["equal_wallclock_s"] = round(limit, 1)
        if speed is not None:
            r["cpu_tokens_per_s"] = speed[r["model"]]
            r["cpu_train_seconds"] = round(total[id(r)], 1)


def run(data: Path, out: Path, tokens: int, seeds: Sequence[int], base: ModelConfig, tcfg: TrainConfig, variants: Sequence[str],
        device: str = "cpu", jobs: int = 1, child_args: Sequence[str] = (), mode: str = "both") -> tuple[list[dict[str, Any]], list[str]]:
    """Every (variant, seed); with jobs > 1 each runs in its own process, `jobs` at a time.
    mode: "both" (train, then score), "train" (no scoring) or "score" (score trained runs only).
    Returns the rows of the finished runs and the names of the runs whose process failed."""
    train_texts, val_texts = load_texts(data)
    tok = _ensure_tokenizer(train_texts, out, base.vocab_size)
    todo = [(name, seed) for seed in seeds for name, _, _ in VARIANTS if name in variants]
    if mode == "score":
        todo = [(n, s) for n, s in todo if (run_path(out, n, s) / "model" / "manifest.json").is_file()
                and not (run_path(out, n, s) / "row.json").is_file()]
    if jobs <= 1:
        rows = []
        for name, seed in todo:
            if mode == "score":
                row = score_run(run_path(out, name, seed), val_texts, name, seed)
            else:
                row = run_one(name, seed, train_texts, val_texts, out, tok, tokens, base, tcfg, device, score=mode == "both")
            if row is not None:
                rows.append(row)
                print(json.dumps({k: v for k, v in row.items() if k not in ("curve", "sample")}), flush=True)
        return rows, []  # in one process a failure raises
    import subprocess
    import sys
    pending, running = list(todo), []
    failed = []
    while pending or running:
        while pending and len(running) < jobs:
            name, seed = pending.pop(0)
            run_path(out, name, seed).mkdir(parents=True, exist_ok=True)
            logf = (run_path(out, name, seed) / "stderr.log").open("w")
            cmd = [sys.executable, "-m", "bench.quality", *child_args, "--models", name, "--seeds", str(seed), "--jobs", "1", "--child"]
            running.append(((name, seed), subprocess.Popen(cmd, stdout=logf, stderr=subprocess.STDOUT), logf))
        time.sleep(1.0)
        for item in list(running):
            (name, seed), proc, logf = item
            if proc.poll() is not None:
                logf.close()
                running.remove(item)
                print(f"{name} seed {seed}: exit {proc.returncode}", flush=True)
                if proc.returncode != 0:
                    failed.append(f"{name}-seed{seed}")
    rows = [json.loads((run_path(out, n, s) / "row.json").read_text()) for n, s in todo if (run_path(out, n, s) / "row.json").is_file()]
    if failed:
        print(f"failed runs (see their stderr.log): {', '.join(failed)}", flush=True)
    return rows, failed


def _spread(vals: list[float], fmt: str) -> str:
    """Median, and the range over seeds where there is more than one."""
    m = statistics.median(vals)
    return format(m, fmt) if len(vals) < 2 else f"{format(m, fmt)} ({format(min(vals), fmt)}–{format(max(vals), fmt)})"


def table(rows: list[dict[str, Any]]) -> str:
    """Medians over seeds (range in brackets). "loop bound" is the training loop's validation
    estimate at the end (fixed windows and noise draws, no reconstruction term) and exists for every
    run; "scored bound" is engine.evaluate's (with the reconstruction term), for scored runs only."""
    by: dict[str, list[dict[str, Any]]] = {}
    for r in rows:
        by.setdefault(r["model"], []).append(r)
    cpu = any("cpu_tokens_per_s" in r for r in rows)
    lines = ["| model | params | seeds | loop bound, bits/token | ppl (loop bound) | scored bound, bits/token | infill@15% | infill@50% | infill@85% | train tokens/s"
             + (" | CPU tokens/s | CPU s for the budget" if cpu else " | train s")
             + " | bits at equal wall-clock | the same, interpolated |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|" + ("---|" if cpu else "")]
    for name, rs in by.items():
        def vals(key: str, sub: str | None = None) -> list[float]:
            return [(r[key][sub] if sub else r[key]) for r in rs if r.get(key) is not None]
        loop = [r["curve"][-1]["bits"] for r in rs]
        scored = vals("nelbo_bits_per_token")
        inf = [_spread(v, ".3f") if (v := vals("infill_accuracy", f)) else "—" for f in ("0.15", "0.5", "0.85")]
        eq, eqi = vals("bits_at_equal_wallclock"), vals("bits_at_equal_wallclock_interp")
        tps = f"{statistics.median(v):,.0f}" if (v := vals("tokens_per_s")) else "—"
        clock = (f"{statistics.median(vals('cpu_tokens_per_s')):,.0f} | {statistics.median(vals('cpu_train_seconds')):,.0f}" if cpu
                 else f"{statistics.median(vals('train_seconds')):,.0f}")
        lines.append(f"| {name} | {rs[0]['parameters']:,} | {len(rs)} | {_spread(loop, '.3f')} | {2 ** statistics.median(loop):.1f} | "
                     f"{_spread(scored, '.3f') + (f' ({len(scored)} scored)' if len(scored) != len(rs) else '') if scored else '—'} | "
                     f"{' | '.join(inf)} | {tps} | {clock} | {_spread(eq, '.3f') if eq else '—'} | "
                     f"{_spread(eqi, '.3f') if eqi else '—'} |")
    return "\n".join(lines)


def targets(rows: list[dict[str, Any]]) -> list[str]:
    """The issue's three targets for SFDLM-uniform against the transformer denoiser (medians over seeds)."""
    def med(name: str, key: str, sub: str | None = None) -> float | None:
        v = [r[key][sub] if sub else r[key] for r in rows if r["model"] == name and r.get(key) is not None]
        return statistics.median(v) if v else None
    a, b = PAIR
    out = []
    # equal tokens only where a seed's two runs both reached the same step (a run stopped early,
    # e.g. once past the other's finishing time, is tabulated but not compared at equal tokens)
    seeds = sorted({r["seed"] for r in rows})
    level = {s for s in seeds if len({r["tokens"] for r in rows if r["seed"] == s and r["model"] in PAIR}) == 1}
    la = [r["curve"][-1]["bits"] for r in rows if r["model"] == a and r["seed"] in level]
    lb = [r["curve"][-1]["bits"] for r in rows if r["model"] == b and r["seed"] in level]
    if uneven := [s for s in seeds if s not in level]:
        out.append(f"seeds {', '.join(map(str, uneven))}: the two runs stopped at different steps, so they are left out of the equal-token line")
    if la and lb:
        pa, pb = 2 ** statistics.median(la), 2 ** statistics.median(lb)
        out.append(f"perplexity bound at equal tokens (loop bound): {pa:.1f} vs {pb:.1f} = {pa / pb:.3f}x (target <= 1.15x): {'met' if pa / pb <= 1.15 else 'NOT met'}")
    pa, pb = med(a, "ppl_bound"), med(b, "ppl_bound")
    if pa and pb:
        out.append(f"perplexity bound at equal tokens (scored): {pa:.1f} vs {pb:.1f} = {pa / pb:.3f}x (target <= 1.15x): {'met' if pa / pb <= 1.15 else 'NOT met'}")
    for key, label in (("bits_at_equal_wallclock", "bound at equal wall-clock"),
                       ("bits_at_equal_wallclock_interp", "bound at equal wall-clock, interpolated between evaluations")):
        ea, eb = med(a, key), med(b, key)
        if ea and eb:
            out.append(f"{label}: {ea:.3f} vs {eb:.3f} bits/token (target: lower): {'met' if ea < eb else 'NOT met'}")
        if len(seeds) > 1:  # the median can hide a seed that misses
            for s in seeds:
                va = [r[key] for r in rows if r["model"] == a and r["seed"] == s and r.get(key) is not None]
                vb = [r[key] for r in rows if r["model"] == b and r["seed"] == s and r.get(key) is not None]
                if va and vb:
                    out.append(f"  seed {s}: {va[0]:.3f} vs {vb[0]:.3f}: {'met' if va[0] < vb[0] else 'NOT met'}")
    ia, ib = med(a, "infill_accuracy", "0.5"), med(b, "infill_accuracy", "0.5")
    if ia is not None and ib is not None:
        out.append(f"infill at 50 % pinned: {100 * ia:.1f} % vs {100 * ib:.1f} % (target: within 2 points): {'met' if ia >= ib - 0.02 else 'NOT met'}")
    return out


def main(argv: Sequence[str] | None = None) -> int:
    p = Parser(prog="python -m bench.quality", description=__doc__.splitlines()[0])
    p.add_argument("--data", type=Path, required=True, help="prepared corpus folder (python -m engine.corpus fetch)")
    p.add_argument("--out", type=Path, default=Path("data/quality"), help="runs and the shared tokenizer go here (a tokenizer already there is reused, whatever --vocab says; a different size is reported)")
    p.add_argument("--tokens", type=int, default=2_000_000, help="training tokens per model (same for all)")
    p.add_argument("--seeds", default="0", help="comma-separated seeds (three where affordable: 0,1,2)")
    p.add_argument("--models", default=",".join(v[0] for v in VARIANTS), help="which variants to run")
    p.add_argument("--d-model", type=int, default=256, help="width of every model")
    p.add_argument("--layers", type=int, default=6, help="depth of every model")
    p.add_argument("--vocab", type=int, default=8192, help="tokenizer size when --out has none yet (trained once, shared)")
    p.add_argument("--seq-len", type=int, default=256, help="training window")
    p.add_argument("--batch-size", type=int, default=8, help="windows per step")
    p.add_argument("--lr", type=float, default=1e-3, help="peak learning rate (all models)")
    p.add_argument("--warmup-steps", type=int, default=100, help="linear warm-up steps (all models)")
    p.add_argument("--eval-every", type=int, default=100, help="validation every this many steps")
    p.add_argument("--device", default="cpu", help="where models train (cpu, cuda); scoring is always on the CPU")
    p.add_argument("--jobs", type=int, default=1, help="runs at a time, each in its own process")
    p.add_argument("--threads", type=int, help="torch CPU threads (per process)")
    p.add_argument("--speed", type=Path, help="JSON of CPU training tokens/s per model (--measure-speed): equal wall-clock on that CPU")
    p.add_argument("--measure-speed", type=Path, metavar="FILE", help="only measure training tokens/s of each model here and write FILE")
    p.add_argument("--collect", action="store_true", help="train nothing: tabulate the finished runs in --out")
    p.add_argument("--no-score", action="store_true", help="train only; score later with --score (e.g. with more CPU threads)")
    p.add_argument("--score", action="store_true", help="train nothing: score the trained, unscored runs in --out, then tabulate")
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--json", action="store_true", help="print the rows as JSON after the table")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    base = ModelConfig(vocab_size=args.vocab, d_model=args.d_model, n_layers=args.layers)
    tcfg = TrainConfig(seq_len=args.seq_len, batch_size=args.batch_size, eval_every=args.eval_every,
                       warmup_steps=args.warmup_steps, lr=args.lr)
    models = args.models.split(",")
    unknown = sorted(set(models) - set(ARCH_NOISE))
    if unknown:
        p.error(f"unknown model(s) {', '.join(unknown)}; choose from {', '.join(v[0] for v in VARIANTS)}")
    seeds = [int(x) for x in args.seeds.split(",")]
    failed: list[str] = []
    if args.measure_speed:
        train_texts, _ = load_texts(args.data)
        tok = _ensure_tokenizer(train_texts, args.out, args.vocab)
        speed = measure_speed(base, tcfg, tok, models, train_texts, device=args.device)
        args.measure_speed.write_text(json.dumps(speed, indent=2))
        print(json.dumps(speed, indent=2))
        return 0
    if args.collect:
        rows = gather(args.out, base, tcfg, models, seeds, args.vocab)
    else:
        child = [a for a in (argv if argv is not None else __import__("sys").argv[1:])]
        child = [a for i, a in enumerate(child) if a not in ("--jobs", "--models", "--seeds", "--json") and
                 (i == 0 or child[i - 1] not in ("--jobs", "--models", "--seeds"))]
        mode = "score" if args.score else "train" if args.no_score else "both"
        rows, failed = run(args.data, args.out, args.tokens, seeds, base, tcfg, models, device=args.device,
                           jobs=args.jobs, child_args=child, mode=mode)
        if args.child:
            return 0  # a failure raised, and the parent saw its exit status
        if mode != "both":  # tabulate everything there is, scored or not
            rows = gather(args.out, base, tcfg, models, seeds, args.vocab)
    if not rows:
        print("no finished runs", flush=True)
        return 1
    speed = json.loads(args.speed.read_text()) if args.speed else None
    equal_wallclock(rows, speed)
    (args.out / "results.json").write_text(json.dumps(rows, indent=2))
    print(table(rows))
    for line in targets(rows):
        print(line)
    if args.json:
        print(json.dumps(rows, indent=2))
    return 1 if failed else 0  # the table shows what finished; a failed run still fails the command


if __name__ == "__main__":
    raise SystemExit(main())
