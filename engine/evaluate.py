"""`python -m engine.evaluate --model DIR --data PATH [--json]`: how good a model folder is.

Reports (JSON)
  tokens                 tokens scored for the likelihood
  nelbo_bits_per_token   diffusion: the continuous-time negative ELBO with its reconstruction
                         term, averaged over --mc time draws per window (an upper bound on
                         -log2 p per token); causal baseline: its exact negative log-likelihood
  ppl_bound              2 ** nelbo_bits_per_token (for the causal baseline: its perplexity)
  infill_accuracy        {"0.15", "0.5", "0.85"}: fraction of the free positions where the final
                         draft equals the held-out text, when that fraction of each window is
                         pinned in random spans (diffusion models only; null for the causal one)
  pin_preservation       fraction of (pinned position, step) pairs whose token never changed,
                         over every step of every infill run: must be exactly 1.0
  samples                a few unconditional drafts
"""

from __future__ import annotations

import json
import math
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from engine import checkpoint
from engine.cli import Parser, one_line
from engine.config import SamplerConfig
from engine.sampler import sample
from engine.train import TrainError, eval_windows, load_split_texts, token_stream

FRACTIONS = (0.15, 0.5, 0.85)


def span_pins(length: int, fraction: float, gen: torch.Generator, mean_span: int = 4) -> torch.Tensor:
    """(length,) bool: random spans (lengths 1..2*mean_span-1) until `fraction` of positions is covered;
    at least one position stays free."""
    target = min(length - 1, round(fraction * length))
    mask = torch.zeros(length, dtype=torch.bool)
    while int(mask.sum()) < target:
        start = int(torch.randint(0, length, (), generator=gen))
        span = int(torch.randint(1, 2 * mean_span, (), generator=gen))
        room = target - int(mask.sum())
        free = (~mask[start : start + span]).nonzero().flatten()[:room] + start
        mask[free] = True
    return mask


@torch.no_grad()
def likelihood(ck: checkpoint.Checkpoint, data: torch.Tensor, mc: int, seed: int) -> dict[str, float]:
    """Bits per token over (N, L) windows; diffusion terms averaged over `mc` time draws."""
    gen = torch.Generator().manual_seed(seed)
    total, count = 0.0, 0
    if ck.model_cfg.arch == "causal":
        for x in data.split(8):
            logits = ck.model(x[:, :-1])
            total += float(torch.nn.functional.cross_entropy(logits.flatten(0, 1), x[:, 1:].flatten(), reduction="sum"))
            count += x[:, 1:].numel()
    else:
        diffusion = ck.diffusion()
        for x in data.split(8):
            for _ in range(mc):
                out = diffusion.loss(ck.model, x, None, gen, reconstruction=True)
                total += float(out.nelbo_sum) / mc
            count += x.numel()
    bits = total / max(count, 1) / math.log(2)
    return {"tokens": count, "nelbo_bits_per_token": bits, "ppl_bound": 2.0**bits}


def infill(ck: checkpoint.Checkpoint, data: torch.Tensor, steps: int, seed: int) -> tuple[dict[str, float], float]:
    """(accuracy per pinned fraction, pin preservation) over the windows in `data`."""
    diffusion = ck.diffusion()
    acc: dict[str, float] = {}
    kept = checked = 0
    gen = torch.Generator().manual_seed(seed)
    for frac in FRACTIONS:
        right = free_total = 0
        for i, x in enumerate(data):
            pinned = span_pins(x.numel(), frac, gen)  # (L,)
            pins = {int(p): int(x[p]) for p in pinned.nonzero().flatten()}
            last = None
            for step in sample(ck.model, diffusion, SamplerConfig(steps=steps, seed=seed + i), length=x.numel(), pins=pins):
                kept += int((step.tokens[pinned] == x[pinned]).sum())
                checked += int(pinned.sum())
                last = step
            assert last is not None
            right += int((last.tokens[~pinned] == x[~pinned]).sum())
            free_total += int((~pinned).sum())
        acc[str(frac)] = right / max(free_total, 1)
    return acc, (kept / checked if checked else 1.0)


def evaluate(ck: checkpoint.Checkpoint, texts: Sequence[str], *, seq_len: int = 128, max_windows: int = 64,
             infill_windows: int = 16, steps: int = 32, mc: int = 2, n_samples: int = 3, seed: int = 0) -> dict[str, Any]:
    stream = token_stream(texts, ck.tokenizer)
    data = eval_windows(stream, seq_len, max_windows)  # (N, L)
    report: dict[str, Any] = {"model_id": ck.model_id, "arch": ck.model_cfg.arch, "noise": ck.diffusion_cfg.noise, "seq_len": seq_len}
    report |= likelihood(ck, data, mc, seed)
    if ck.model_cfg.arch == "causal":
        report["infill_accuracy"], report["pin_preservation"] = None, None
        prefix = torch.tensor([[ck.tokenizer.bos_id]])
        gen = torch.Generator().manual_seed(seed)
        report["samples"] = [ck.tokenizer.decode(ck.model.generate(prefix, seq_len, generator=gen)[0].tolist()) for _ in range(n_samples)]
        return report
    report["infill_accuracy"], report["pin_preservation"] = infill(ck, data[:infill_windows], steps, seed)
    report["infill_steps"] = steps
    samples = []
    for k in range(n_samples):
        last = None
        for last in sample(ck.model, ck.diffusion(), SamplerConfig(steps=steps, seed=seed + 1000 + k), length=seq_len):
            pass
        samples.append(ck.tokenizer.decode(last.tokens.tolist()))
    report["samples"] = samples
    return report


def main(argv: Sequence[str] | None = None) -> int:
    p = Parser(prog="python -m engine.evaluate", description="Likelihood bound, infill accuracy and pin preservation of a model folder.")
    p.add_argument("--model", type=Path, required=True, help="model folder to evaluate")
    p.add_argument("--data", type=Path, required=True, help="a prepared corpus folder or documents engine.corpus can read")
    p.add_argument("--split", default="test", choices=["train", "validation", "test"], help="split of a prepared corpus folder (default test)")
    p.add_argument("--column", help="text column when --data is a CSV file")
    p.add_argument("--seq-len", type=int, default=128, help="window length in tokens (default 128)")
    p.add_argument("--max-windows", type=int, default=64, help="windows scored for the likelihood (default 64)")
    p.add_argument("--infill-windows", type=int, default=16, help="windows used for each infill fraction (default 16)")
    p.add_argument("--steps", type=int, default=32, help="reverse steps of each infill run and sample (default 32)")
    p.add_argument("--mc", type=int, default=2, help="time draws per window for the diffusion bound (default 2)")
    p.add_argument("--samples", type=int, default=3, help="unconditional drafts to include (default 3)")
    p.add_argument("--seed", type=int, default=0, help="seed of spans, noise and samples")
    p.add_argument("--threads", type=int, help="torch CPU threads")
    p.add_argument("--json", action="store_true", help="print only the JSON report")
    args = p.parse_args(argv)
    if args.seq_len < 2 or args.steps < 1 or args.max_windows < 1 or args.mc < 1:
        p.error("--seq-len must be >= 2 and --steps, --max-windows, --mc >= 1")
    if args.threads:
        torch.set_num_threads(args.threads)
    try:
        ck = checkpoint.load(args.model)
        texts = load_split_texts(args.data, args.split, args.column)
    except (checkpoint.CheckpointError, TrainError) as exc:
        print(f"python -m engine.evaluate: error: {one_line(str(exc))}", file=sys.stderr)
        return 2
    report = evaluate(ck, texts, seq_len=args.seq_len, max_windows=args.max_windows, infill_windows=args.infill_windows,
                      steps=args.steps, mc=args.mc, n_samples=args.samples, seed=args.seed)
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        for k, v in report.items():
            if k != "samples":
                print(f"{k:>22}: {v}")
        for s in report["samples"]:
            print("---\n" + s)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
