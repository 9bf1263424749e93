"""`python -m bench.model_speed [--model DIR]`: how fast a model folder drafts on this machine.

Prints the median time of one reverse step of a `--length`-token draft (the whole sampler
step: model call and posterior draw) and of a whole `--steps`-step draft, plus the folder's
size on disk: the figures the default model's card promises (one step of a 256-token draft
under 30 ms, a 64-step draft under 2 s, at most 50 MB on two CPU cores).
"""

from __future__ import annotations

import json
import statistics
import time
from collections.abc import Sequence
from pathlib import Path

import torch

from engine import checkpoint
from engine.cli import Parser
from engine.config import SamplerConfig
from engine.sampler import sample


def main(argv: Sequence[str] | None = None) -> int:
    p = Parser(prog="python -m bench.model_speed", description=__doc__.splitlines()[0])
    p.add_argument("--model", type=Path, default=Path("assets/model"), help="model folder (default assets/model)")
    p.add_argument("--length", type=int, default=256, help="draft length in tokens (default 256)")
    p.add_argument("--steps", type=int, default=64, help="reverse steps of the whole draft (default 64)")
    p.add_argument("--repeats", type=int, default=5, help="whole drafts timed; the median is reported (default 5)")
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    ck = checkpoint.load(args.model)
    diffusion = ck.diffusion()
    cfg = SamplerConfig(steps=args.steps, seed=0)
    for _ in sample(ck.model, diffusion, SamplerConfig(steps=2), length=args.length):  # warm-up
        pass
    per_step: list[float] = []
    whole: list[float] = []
    for r in range(args.repeats):
        t0 = last = time.perf_counter()
        for step in sample(ck.model, diffusion, SamplerConfig(steps=args.steps, seed=r), length=args.length):
            now = time.perf_counter()
            if step.index > 0:
                per_step.append((now - last) * 1e3)
            last = now
        whole.append((time.perf_counter() - t0) * 1e3)
    size_mb = sum(f.stat().st_size for f in args.model.iterdir() if f.is_file()) / 2**20
    row = {"model_id": ck.model_id, "L": args.length, "steps": cfg.steps, "threads": torch.get_num_threads(),
           "step_ms_median": round(statistics.median(per_step), 2), "draft_ms_median": round(statistics.median(whole), 1),
           "folder_mb": round(size_mb, 1)}
    if args.json:
        print(json.dumps(row))
    else:
        print("| model | L | threads | one step (median) | whole draft, {} steps (median) | on disk |".format(cfg.steps))
        print("|---|---|---|---|---|---|")
        print(f"| {row['model_id']} | {row['L']} | {row['threads']} | {row['step_ms_median']} ms | {row['draft_ms_median']} ms | {row['folder_mb']} MB |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
