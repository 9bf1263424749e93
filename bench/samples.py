"""`python -m bench.samples [--model DIR] [--out docs/samples.md]`: drafts a reader can judge.

Writes, for every template in assets/templates, the drafts of seeds 0..N-1 at the model's own
sampler settings (what the app and engine.sample give by default), as Markdown. Nothing is
picked or edited: seed k is simply the k-th draft.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Sequence
from pathlib import Path

import torch

from engine import checkpoint, template
from engine.cli import Parser
from engine.config import SamplerConfig
from engine.sampler import sample


def draft_ids(ck: checkpoint.Checkpoint, layout: template.Layout, seed: int, cfg: SamplerConfig | None = None) -> list[int]:
    """The token ids of one finished draft of `layout` (the model's own settings unless `cfg`)."""
    cfg = dataclasses.replace(cfg or ck.sampler_cfg, seed=seed)
    last = None
    for last in sample(ck.model, ck.diffusion(), cfg, length=layout.length, pins=layout.pins, words=ck.words,
                       labels=list(layout.pins.values())):
        pass
    return last.tokens.tolist()


def draft(ck: checkpoint.Checkpoint, layout: template.Layout, seed: int) -> str:
    return ck.tokenizer.decode(draft_ids(ck, layout, seed))


def main(argv: Sequence[str] | None = None) -> int:
    p = Parser(prog="python -m bench.samples", description=__doc__.splitlines()[0])
    p.add_argument("--model", type=Path, default=Path("assets/model"), help="model folder (default assets/model)")
    p.add_argument("--templates", type=Path, default=Path("assets/templates"), help="folder of templates")
    p.add_argument("--seeds", type=int, default=10, help="drafts per template, seeds 0..N-1 (default 10)")
    p.add_argument("--out", type=Path, default=Path("docs/samples.md"), help="Markdown file to write")
    p.add_argument("--threads", type=int, default=2, help="torch threads (default 2)")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    ck = checkpoint.load(args.model)
    settings = ", ".join(f"{k}={v}" for k, v in dataclasses.asdict(ck.sampler_cfg).items() if k != "seed")
    lines = [
        "# Sample drafts",
        "",
        f"Every template in `{args.templates}`, seeds 0-{args.seeds - 1}, drafted by `{ck.model_id}` at its own",
        f"sampler settings ({settings}), exactly as `engine.sample --template FILE --seed K` prints them.",
        "Nothing was picked or edited. Regenerate with:",
        "",
        "```bash",
        f"python -m bench.samples --model {args.model} --seeds {args.seeds} --out {args.out}",
        "```",
    ]
    t0 = time.perf_counter()
    for path in sorted(args.templates.glob("*.txt")):
        layout = template.expand(path.read_text(encoding="utf-8"), ck.tokenizer)
        lines += ["", f"## {path.stem}", ""]
        for seed in range(args.seeds):
            text = draft(ck, layout, seed)
            lines += [f"**Seed {seed}**", "", "```text", text.rstrip(), "```", ""]
    args.out.write_text("\n".join(lines).rstrip() + "\n", encoding="utf-8")
    print(f"wrote {args.out} in {time.perf_counter() - t0:.0f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
