"""What one categorical draw per free position costs the sampler, and a whole draft with it.

`python -m bench.draw_cost [--model DIR] [--seeds 5] [--threads 1,2]`

The sampler draws the token each free position commits to from an (n, V) distribution at every
step. `torch.multinomial` makes V random numbers per row for one draw (an exponential race);
an inverse CDF makes one per row and searches the cumulative sum: over all V ids ("flat", a
sequential pass), or, as `engine.diffusion.categorical` does, over block sums first and then
the ids of one block ("two-level"). All draw from the same distribution (multinomial not the
same tokens for a seed). Two tables, the modes timed alternately in one process, medians; "x"
is each mode's time over the two-level draw's:
  draw       ms per call on random (n, V) weights at n = 40 and 150 rows (a slot, a template)
  draft      seconds per template draft of the shipped model at its own settings, per template,
             seeds 0..N-1, with every draw of the sampler (posterior and commitment) done each way
"""

from __future__ import annotations

import dataclasses
import statistics
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import torch

import engine.diffusion as diffusion_mod
import engine.sampler as sampler_mod
from engine import checkpoint, template
from engine.cli import Parser
from engine.draws import categorical


def multinomial(probs: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    return torch.multinomial(probs, 1, generator=gen)[:, 0]


def flat_cdf(probs: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    cdf = probs.cumsum(-1)  # (n, V)
    u = torch.rand(probs.shape[0], 1, generator=gen, dtype=cdf.dtype)
    idx = torch.searchsorted(cdf, u * cdf[:, -1:], right=True)[:, 0]
    return torch.where(idx >= probs.shape[1], probs.argmax(-1), idx)


MODES: dict[str, Callable[[torch.Tensor, torch.Generator], torch.Tensor]] = {
    "multinomial": multinomial, "flat CDF": flat_cdf, "two-level CDF": categorical}


def _median_ms(fn: Callable[[], object], repeats: int = 15) -> float:
    fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(times)


def draw_table(vocab: int) -> None:
    print(f"\ndraw: ms per call, (n, {vocab}) float32 weights")
    print(f"{'n':>5} " + " ".join(f"{m:>14} {'x':>5}" for m in MODES))
    for n in (40, 150):
        w = torch.randn(n, vocab, generator=torch.Generator().manual_seed(n)).mul(3).exp()  # (n, V)
        gen = torch.Generator().manual_seed(0)
        ms = [_median_ms(lambda f=f: f(w, gen)) for f in MODES.values()]
        print(f"{n:>5} " + " ".join(f"{v:>14.3f} {v / ms[-1]:>5.2f}" for v in ms))


def draft_seconds(ck: checkpoint.Checkpoint, layout: template.Layout, seed: int, draw: Callable) -> float:
    cfg = dataclasses.replace(ck.sampler_cfg, seed=seed)
    sampler_mod.categorical = diffusion_mod.categorical = draw
    try:
        t0 = time.perf_counter()
        for _ in sampler_mod.sample(ck.model, ck.diffusion(), cfg, length=layout.length, pins=layout.pins,
                                    words=ck.words, labels=list(layout.pins.values())):
            pass
        return time.perf_counter() - t0
    finally:
        sampler_mod.categorical = diffusion_mod.categorical = categorical


def main(argv: Sequence[str] | None = None) -> int:
    p = Parser(prog="python -m bench.draw_cost", description=__doc__.splitlines()[0])
    p.add_argument("--model", type=Path, default=Path("assets/model"), help="model folder (default assets/model)")
    p.add_argument("--templates", type=Path, default=Path("assets/templates"), help="folder of templates")
    p.add_argument("--seeds", type=int, default=5, help="drafts per template and mode, seeds 0..N-1 (default 5)")
    p.add_argument("--threads", default="1,2", help="torch threads to run with, comma-separated (default 1,2)")
    args = p.parse_args(argv)
    ck = checkpoint.load(args.model)
    draw_table(ck.tokenizer.vocab_size)
    for threads in [int(x) for x in args.threads.split(",")]:
        torch.set_num_threads(threads)
        print(f"\ndraft: seconds per draft, {ck.model_id}, steps {ck.sampler_cfg.steps}, {threads} thread(s), "
              f"median of {args.seeds} seeds")
        print(f"{'template':28} {'tokens':>6} " + " ".join(f"{m:>14} {'x':>5}" for m in MODES))
        for path in sorted(args.templates.glob("*.txt")):
            layout = template.expand(path.read_text(encoding="utf-8"), ck.tokenizer)
            got: dict[str, list[float]] = {m: [] for m in MODES}
            draft_seconds(ck, layout, 0, categorical)  # warm-up for this length
            for seed in range(args.seeds):
                for mode, draw in MODES.items():
                    got[mode].append(draft_seconds(ck, layout, seed, draw))
            med = [statistics.median(got[m]) for m in MODES]
            print(f"{path.stem:28} {layout.length:>6} " + " ".join(f"{v:>14.3f} {v / med[-1]:>5.2f}" for v in med))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
