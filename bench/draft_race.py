"""Seconds per draft, side by side: SFDLM sampler settings against the causal transformer.

`python -m bench.draft_race --ar-model data/train-ar/best [--specs "steps=10" "steps=64,commit_power=1"]
 [--drafts 20] [--threads 2]`

For every shipped template (and the free rows of --free), each seed's draft is written by the
causal transformer (`bench.draft_quality.ar_draft`: each slot left to right with a KV cache) and
then by the SFDLM under every --specs setting (changes to the model's own settings), one after the
other, so that machine noise hits all of them alike. The table gives the median seconds per draft
of each, and each SFDLM setting's ratio to the causal model's median (below 1: faster). What the
drafts read like is `bench.draft_quality`'s job; this only times them.
"""

from __future__ import annotations

import json
import platform
import statistics
from collections.abc import Sequence
from pathlib import Path

import torch

from bench.draft_quality import ar_draft, jobs_for, sfdlm_draft
from engine import checkpoint
from engine.cli import Parser
from engine.config import SamplerConfig, parse_sampler_spec


def race(ck: checkpoint.Checkpoint, ar: checkpoint.Checkpoint, cfgs: Sequence[SamplerConfig], templates: Sequence[Path],
         free: Sequence[int], drafts: int, test: Sequence[str], ar_temperature: float) -> list[dict]:
    """Per row: the causal model's median seconds and each SFDLM setting's, drafts alternated."""
    rows = []
    ar_cfg = SamplerConfig(temperature=ar_temperature)
    for job, ar_job in zip(jobs_for(ck, templates, free), jobs_for(ar, templates, free)):
        sfdlm_draft(ck, cfgs[0], job, 0, test, 3)  # warm-up: kernels cached per length
        ar_draft(ar, ar_cfg, ar_job, 0, test, 3)
        ar_s: list[float] = []
        df_s: list[list[float]] = [[] for _ in cfgs]
        for seed in range(drafts):
            ar_s.append(ar_draft(ar, ar_cfg, ar_job, seed, test, 3)[1])
            for i, cfg in enumerate(cfgs):
                df_s[i].append(sfdlm_draft(ck, cfg, job, seed, test, 3)[1])
        rows.append({"row": job.name, "causal_s": statistics.median(ar_s), "sfdlm_s": [statistics.median(v) for v in df_s]})
    return rows


def main(argv: Sequence[str] | None = None) -> int:
    p = Parser(prog="python -m bench.draft_race", description=__doc__.splitlines()[0])
    p.add_argument("--model", type=Path, default=Path("assets/model"), help="SFDLM model folder (default assets/model)")
    p.add_argument("--ar-model", type=Path, required=True, help="causal transformer folder (engine.train --objective ar)")
    p.add_argument("--data", type=Path, default=Path("data/corpus"), help="prepared corpus: free-draft prefixes come from test.jsonl")
    p.add_argument("--specs", nargs="*", default=[""], metavar="SPEC",
                   help="SFDLM settings, each a change to the model's own ('' = the model's settings as they are, "
                   "free_steps on free rows; a SPEC that sets steps sets them for every row)")
    p.add_argument("--free", default="", help="free-draft lengths in tokens, comma-separated (default none)")
    p.add_argument("--drafts", type=int, default=20, help="drafts per row and model, seeds 0..N-1 (default 20)")
    p.add_argument("--ar-temperature", type=float, default=0.8, help="the causal transformer's temperature (default 0.8)")
    p.add_argument("--threads", type=int, default=2, help="torch threads (default 2)")
    p.add_argument("--json", type=Path, default=None, help="also write the figures to this JSON file")
    args = p.parse_args(argv)
    if args.drafts < 1:
        p.error("--drafts must be at least 1")
    torch.set_num_threads(args.threads)
    ck, ar = checkpoint.load(args.model), checkpoint.load(args.ar_model)
    try:
        cfgs = [parse_sampler_spec(s, ck.sampler_cfg) for s in args.specs]
    except ValueError as exc:
        p.error(str(exc))
    test: list[str] = []
    free = [int(x) for x in args.free.split(",") if x.strip()]
    if free:
        with (args.data / "test.jsonl").open(encoding="utf-8") as f:
            test = [json.loads(line)["text"] for line in f if line.strip()]
    rows = race(ck, ar, cfgs, sorted(Path("assets/templates").glob("*.txt")), free, args.drafts, test, args.ar_temperature)
    names = [s or "model's settings" for s in args.specs]
    print(f"model {ck.name} against {ar.name}; {args.threads} thread(s); {platform.processor() or platform.machine()}; "
          f"{args.drafts} drafts a row, medians\n")
    print("| row | causal s | " + " | ".join(f"{n} s (ratio)" for n in names) + " |")
    print("|---|---|" + "---|" * len(names))
    for r in rows:
        cells = " | ".join(f"{s:.3f} ({s / r['causal_s']:.2f}x)" for s in r["sfdlm_s"])
        print(f"| {r['row']} | {r['causal_s']:.3f} | {cells} |")
    ratios = [[r["sfdlm_s"][i] / r["causal_s"] for r in rows] for i in range(len(cfgs))]
    print("| median ratio | 1.00x | " + " | ".join(f"{statistics.median(x):.2f}x" for x in ratios) + " |")
    if args.json:
        args.json.write_text(json.dumps({"specs": args.specs, "threads": args.threads, "rows": rows}, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
