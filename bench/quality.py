"""The comparison the paper invites: SFDLM (uniform noise), SFDLM (absorbing), the transformer
denoiser (uniform) and the causal transformer, on the same data, tokenizer and token budget, at
(nearly) equal parameter count.

`python -m bench.quality --data data/corpus [--tokens 2000000] [--seeds 0] [--json] [--out DIR]`

Each model trains through engine.train with the same windows per step and steps, validating on
the same fixed windows every --eval-every steps (the ELBO estimate of the training loop, one
time draw per window); then engine.evaluate scores the final model on the validation split
(bound with reconstruction term, infill at 15/50/85 % pinned). Equal wall-clock: each model's
validation bound at the last evaluation no later than the fastest model's whole training time.
Parameters are matched by widening the transformers' channel MLP (mlp_mult) to the SFDLM's count.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import statistics
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from engine import checkpoint
from engine.config import DiffusionConfig, ModelConfig, TrainConfig
from engine.evaluate import evaluate
from engine.model import build_model, count_parameters
from engine.tokenizer import Tokenizer
from engine.train import Setup, load_texts, train

VARIANTS = (("sfdlm-uniform", "sfdlm", "uniform"), ("sfdlm-absorbing", "sfdlm", "absorbing"),
            ("transformer-uniform", "transformer", "uniform"), ("causal", "causal", "uniform"))


def matched(base: ModelConfig, arch: str) -> ModelConfig:
    """`base` with arch set and mlp_mult chosen so the parameter count is closest to the SFDLM's."""
    target = count_parameters(build_model(dataclasses.replace(base, arch="sfdlm")))
    if arch == "sfdlm":
        return dataclasses.replace(base, arch=arch)
    options = [dataclasses.replace(base, arch=arch, mlp_mult=m) for m in range(1, 17)]
    return min(options, key=lambda c: abs(count_parameters(build_model(c)) - target))


def run(data: Path, out: Path, tokens: int, seeds: Sequence[int], base: ModelConfig, tcfg: TrainConfig, variants: Sequence[str]) -> list[dict[str, Any]]:
    train_texts, val_texts = load_texts(data)
    tok_path = out / "tokenizer.json"
    if tok_path.is_file():
        tok = Tokenizer.load(tok_path)
    else:
        out.mkdir(parents=True, exist_ok=True)
        tok = Tokenizer.train(train_texts, vocab_size=base.vocab_size)
        tok.save(tok_path)
    base = dataclasses.replace(base, vocab_size=tok.vocab_size)
    steps = max(1, tokens // (tcfg.batch_size * tcfg.seq_len))
    rows = []
    for seed in seeds:
        for name, arch, noise in VARIANTS:
            if name not in variants:
                continue
            mcfg = matched(base, arch)
            run_dir = out / f"{name}-seed{seed}"
            setup = Setup(mcfg, DiffusionConfig(noise=noise), dataclasses.replace(tcfg, max_steps=steps, seed=seed), tok)
            train(setup, train_texts, val_texts, run_dir, log_every=max(1, steps // 20), name=name)
            curve = [json.loads(x)["eval"] for x in (run_dir / "log.jsonl").read_text().splitlines() if '"eval"' in x]
            ck = checkpoint.load(run_dir / "model")
            wall = float(ck.meta["train_seconds"])  # optimizer steps only, validation excluded
            rep = evaluate(ck, val_texts, seq_len=tcfg.seq_len, max_windows=64, infill_windows=16, steps=32, mc=2, n_samples=1, seed=seed)
            rows.append({"model": name, "seed": seed, "parameters": count_parameters(ck.model), "mlp_mult": mcfg.mlp_mult,
                         "tokens": steps * tcfg.batch_size * tcfg.seq_len, "train_seconds": round(wall, 1),
                         "tokens_per_s": round(steps * tcfg.batch_size * tcfg.seq_len / wall, 1),
                         "curve": [{"elapsed_s": c.get("elapsed_s"), "step": c["step"], "bits": c["nelbo_bits_per_token"]} for c in curve],
                         "nelbo_bits_per_token": rep["nelbo_bits_per_token"], "ppl_bound": rep["ppl_bound"],
                         "infill_accuracy": rep["infill_accuracy"], "pin_preservation": rep["pin_preservation"], "sample": rep["samples"][0]})
            print(json.dumps({k: v for k, v in rows[-1].items() if k not in ("curve", "sample")}), flush=True)
    fastest = min(r["train_seconds"] for r in rows)
    for r in rows:  # the bound each model had reached when the fastest one finished
        early = [c for c in r["curve"] if c["elapsed_s"] is not None and c["elapsed_s"] <= fastest]
        r["bits_at_equal_wallclock"] = early[-1]["bits"] if early else None
    return rows


def table(rows: list[dict[str, Any]]) -> str:
    by: dict[str, list[dict[str, Any]]] = {}
    for r in rows:
        by.setdefault(r["model"], []).append(r)
    lines = ["| model | params | seeds | ppl bound (median) | bits/token | infill@15% | infill@50% | infill@85% | tokens/s | train s | bits at equal wall-clock |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for name, rs in by.items():
        def med(key: str, sub: str | None = None) -> Any:
            vals = [r[key][sub] if sub else r[key] for r in rs if r[key] is not None]
            return statistics.median(vals) if vals else None
        inf = [f"{med('infill_accuracy', f):.3f}" if rs[0]["infill_accuracy"] else "—" for f in ("0.15", "0.5", "0.85")]
        eq = med("bits_at_equal_wallclock")
        lines.append(f"| {name} | {rs[0]['parameters']:,} | {len(rs)} | {med('ppl_bound'):.2f} | {med('nelbo_bits_per_token'):.3f} | "
                     f"{' | '.join(inf)} | {med('tokens_per_s'):,.0f} | {med('train_seconds'):.0f} | {'—' if eq is None else f'{eq:.3f}'} |")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.quality", description=__doc__.splitlines()[0])
    p.add_argument("--data", type=Path, required=True, help="prepared corpus folder (python -m engine.corpus fetch)")
    p.add_argument("--out", type=Path, default=Path("data/quality"), help="runs and the shared tokenizer go here")
    p.add_argument("--tokens", type=int, default=2_000_000, help="training tokens per model (same for all)")
    p.add_argument("--seeds", default="0", help="comma-separated seeds (three where affordable: 0,1,2)")
    p.add_argument("--models", default=",".join(v[0] for v in VARIANTS), help="which variants to run")
    p.add_argument("--d-model", type=int, default=256, help="width of every model")
    p.add_argument("--layers", type=int, default=6, help="depth of every model")
    p.add_argument("--vocab", type=int, default=8192, help="tokenizer size (trained once, shared)")
    p.add_argument("--seq-len", type=int, default=256, help="training window")
    p.add_argument("--batch-size", type=int, default=8, help="windows per step")
    p.add_argument("--eval-every", type=int, default=100, help="validation every this many steps")
    p.add_argument("--threads", type=int, help="torch threads")
    p.add_argument("--json", action="store_true", help="print the rows as JSON after the table")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    base = ModelConfig(vocab_size=args.vocab, d_model=args.d_model, n_layers=args.layers)
    tcfg = TrainConfig(seq_len=args.seq_len, batch_size=args.batch_size, eval_every=args.eval_every, warmup_steps=100, lr=1e-3)
    rows = run(args.data, args.out, args.tokens, [int(s) for s in args.seeds.split(",")], base, tcfg, args.models.split(","))
    (args.out / "results.json").write_text(json.dumps(rows, indent=2))
    print(table(rows))
    if args.json:
        print(json.dumps(rows, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
