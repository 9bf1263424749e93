"""Whole-draft wall time: the SFDLM sampler against a causal transformer decoding with a KV cache.

`python -m bench.draft_time [--lengths 256,2048] [--steps 8,16,32,64] [--repeats 3] [--json]`

Both models have equal width and depth (d=256, 6 layers, vocabulary 8192, random weights: the
arithmetic, not the text, is measured). For each draft length L, the autoregressive model
writes L tokens one by one after a <bos> token; the diffusion model writes all L positions in S
reverse steps (the full sampler: model call, posterior, sampling, pins). They are timed
alternately in one process, and the median of --repeats runs is reported.

Break-even: the most steps at which a whole diffusion draft is still no slower than the
autoregressive one, from a least-squares line time(S) = a + b*S through the measured points.
"""

from __future__ import annotations

import json
import math
import platform
import statistics
import time
from collections.abc import Callable, Sequence

import torch

from engine.build import build_model
from engine.cli import Parser
from engine.config import DiffusionConfig, ModelConfig, SamplerConfig
from engine.diffusion import make_diffusion
from engine.sampler import sample
from engine.tokenizer import BOS, MASK


def _ms(fn: Callable[[], object]) -> float:
    t0 = time.perf_counter()
    fn()
    return (time.perf_counter() - t0) * 1e3


def break_even(steps: Sequence[int], times_ms: Sequence[float], ar_ms: float) -> int:
    """Largest S with a + b*S <= ar_ms for the least-squares line through (steps, times)."""
    n = len(steps)
    mx, my = sum(steps) / n, sum(times_ms) / n
    var = sum((s - mx) ** 2 for s in steps)
    b = sum((s - mx) * (y - my) for s, y in zip(steps, times_ms)) / var if var else my / mx
    a = my - b * mx
    if b <= 0:
        return max(steps)
    return max(0, math.floor((ar_ms - a) / b))


def run(lengths: Sequence[int], steps: Sequence[int], repeats: int, d_model: int, n_layers: int, vocab: int) -> list[dict]:
    torch.manual_seed(0)
    base = dict(vocab_size=vocab, d_model=d_model, n_layers=n_layers)
    sfdlm = build_model(ModelConfig(arch="sfdlm", **base)).eval()
    ar = build_model(ModelConfig(arch="causal", **base)).eval()
    diffusion = make_diffusion(DiffusionConfig(noise="uniform"), vocab, MASK)

    def diffuse(length: int, s: int) -> None:
        for _ in sample(sfdlm, diffusion, SamplerConfig(steps=s, seed=0), length=length):
            pass

    def decode(length: int) -> None:
        g = torch.Generator().manual_seed(0)
        with torch.inference_mode():
            ar.generate(torch.tensor([[BOS]]), length, generator=g)

    rows = []
    for length in lengths:
        decode(min(length, 32))  # warm-up (allocator, kernels cached per length)
        diffuse(length, 2)
        ar_t: list[float] = []
        df_t: dict[int, list[float]] = {s: [] for s in steps}
        for _ in range(repeats):  # alternate so that machine noise hits both alike
            ar_t.append(_ms(lambda: decode(length)))
            for s in steps:
                df_t[s].append(_ms(lambda: diffuse(length, s)))
        ar_ms = statistics.median(ar_t)
        df_ms = {s: statistics.median(v) for s, v in df_t.items()}
        rows.append(
            {
                "L": length,
                "ar_ms": round(ar_ms, 1),
                "diffusion_ms": {str(s): round(v, 1) for s, v in df_ms.items()},
                "ratio_ar_over_diffusion": {str(s): round(ar_ms / v, 2) for s, v in df_ms.items()},
                "break_even_steps": break_even(list(df_ms), list(df_ms.values()), ar_ms),
            }
        )
    return rows


def main(argv: Sequence[str] | None = None) -> int:
    p = Parser(prog="python -m bench.draft_time", description=__doc__.splitlines()[0])
    p.add_argument("--lengths", default="256,2048", help="comma-separated draft lengths in tokens (default 256,2048)")
    p.add_argument("--steps", default="8,16,32,64", help="comma-separated reverse-step counts for the diffusion draft")
    p.add_argument("--repeats", type=int, default=3, help="timed runs per configuration; the median is reported (default 3)")
    p.add_argument("--d-model", type=int, default=256, help="width of both models (default 256)")
    p.add_argument("--layers", type=int, default=6, help="depth of both models (default 6)")
    p.add_argument("--vocab", type=int, default=8192, help="vocabulary size (default 8192)")
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    p.add_argument("--json", action="store_true", help="print a JSON list instead of the table")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    lengths = [int(x) for x in args.lengths.split(",")]
    steps = sorted(int(x) for x in args.steps.split(","))
    rows = run(lengths, steps, args.repeats, args.d_model, args.layers, args.vocab)
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    print(f"# {platform.processor() or platform.machine()}, torch {torch.__version__}, threads {torch.get_num_threads()}, "
          f"d={args.d_model}, layers={args.layers}, V={args.vocab}, median of {args.repeats}")
    head = "| L | AR + KV cache ms | " + " | ".join(f"SFDLM {s} steps ms (AR/SFDLM)" for s in steps) + " | break-even steps |"
    print(head)
    print("|" + "---|" * (3 + len(steps)))
    for r in rows:
        cells = " | ".join(f"{r['diffusion_ms'][str(s)]:.0f} ({r['ratio_ar_over_diffusion'][str(s)]:.2f}x)" for s in steps)
        print(f"| {r['L']} | {r['ar_ms']:.0f} | {cells} | {r['break_even_steps']} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
