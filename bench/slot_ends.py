"""`python -m bench.slot_ends [--model DIR] [--specs SPEC ...] [--seeds 10]`: where template fills end.

A template slot has a fixed number of positions. A model that has learnt `<eos>` (engine.slot_data)
may end a fill early, and the sampler's end_of_slot rule keeps `<eos>` a suffix of the slot. For
every shipped template and seeds 0..N-1, under each sampler setting (a change to the model's own,
'' for none), this counts:
- slots ended by <eos>: the share of slots whose fill stops before the slot's last position;
- kept: of those, the mean share of the slot the fill's text takes;
- on a full stop: of those, the share whose text ends with ". ! ?";
- fills ending a sentence: the share of all non-empty fills whose text ends with ". ! ?"
  (`bench.draft_quality.end_rate`).
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from pathlib import Path

import torch

from bench.draft_quality import end_rate
from bench.samples import draft_ids
from engine import checkpoint, template
from engine.cli import Parser
from engine.config import SamplerConfig, parse_sampler_spec
from engine.tokenizer import EOS
from engine.words import SENTENCE_ENDS


def slot_fills(ck: checkpoint.Checkpoint, cfg: SamplerConfig, layout: template.Layout, seed: int) -> list[list[int]]:
    """The token ids of each slot of one draft of `layout`, <eos> included."""
    ids = draft_ids(ck, layout, seed, cfg)
    return [ids[s.start:s.start + s.length] for s in layout.slots]


def tally(ck: checkpoint.Checkpoint, fills: Sequence[Sequence[int]]) -> dict:
    """The four shares over slot fills (ids, <eos> included)."""
    ended, kept, stops, texts = 0, [], 0, []
    for f in fills:
        e = list(f).index(EOS) if EOS in f else len(f)
        text = ck.tokenizer.decode(list(f[:e])).rstrip()
        texts.append(text)
        if e < len(f):
            ended += 1
            kept.append(e / len(f))
            stops += bool(text) and text[-1] in SENTENCE_ENDS
    return {"slots": len(fills), "ended": ended / len(fills) if fills else float("nan"),
            "kept": statistics.mean(kept) if kept else float("nan"),
            "on_stop": stops / ended if ended else float("nan"),
            "sentence": end_rate([texts])}


def main(argv: Sequence[str] | None = None) -> int:
    p = Parser(prog="python -m bench.slot_ends", description=__doc__.splitlines()[0])
    p.add_argument("--model", type=Path, default=Path("assets/model"), help="model folder (default assets/model)")
    p.add_argument("--templates", type=Path, default=Path("assets/templates"), help="folder of templates")
    p.add_argument("--specs", nargs="*", default=[""], metavar="SPEC",
                   help="sampler settings, each a change to the model's own ('' = as they are)")
    p.add_argument("--seeds", type=int, default=10, help="drafts per template, seeds 0..N-1 (default 10)")
    p.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    args = p.parse_args(argv)
    if args.seeds < 1:
        p.error("--seeds must be at least 1")
    torch.set_num_threads(args.threads)
    ck = checkpoint.load(args.model)
    try:
        cfgs = [parse_sampler_spec(s, ck.sampler_cfg) for s in args.specs]
    except ValueError as exc:
        p.error(str(exc))
    layouts = [template.expand(f.read_text(encoding="utf-8"), ck.tokenizer) for f in sorted(args.templates.glob("*.txt"))]
    if not layouts:
        p.error(f"no template (*.txt) in {args.templates}")
    print(f"model {ck.name} ({args.model}); {len(layouts)} templates, seeds 0-{args.seeds - 1}\n")
    print("| setting | slots | ended by <eos> | text's share of an ended slot | ended on a full stop | fills ending a sentence |")
    print("|---|---|---|---|---|---|")
    for spec, cfg in zip(args.specs, cfgs):
        try:
            r = tally(ck, [f for lay in layouts for seed in range(args.seeds) for f in slot_fills(ck, cfg, lay, seed)])
        except ValueError as exc:  # settings the sampler refuses (steps=0, ...)
            p.error(f"setting {spec!r}: {exc}")
        print(f"| {spec or 'model settings'} | {r['slots']} | {r['ended']:.0%} | {r['kept']:.0%} | {r['on_stop']:.0%} | "
              f"{r['sentence']:.0%} |", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
