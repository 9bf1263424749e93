"""Run benchmarks on two checkouts side by side, alternately, and print both medians and the ratio.

    python -m bench.compare_commits --base DIR [--head DIR] [--rounds 3]
        --bench scaling "--lengths 256,1024 --no-memory" --bench draft_time "--lengths 256 --steps 32" ...

For a change that must not move speed or memory (a reshaping, say): check the old commit out
beside this one (`git worktree add ../base COMMIT`), then run this from either. Each round runs
every benchmark once in each checkout, `python -m bench.NAME ARGS --json` with that checkout's
own code and the same interpreter, alternating which goes first from round to round, so that
load from other processes on a shared machine falls on both. Timing and memory figures are read
from the JSON (every numeric leaf whose name has a `ms`, `s` or `mb` part), the median over the
rounds is printed for each side, and head / base beside it.

Glossary
  base, head   the two checkouts (head defaults to the one this file is in)
  metric       one numeric leaf of a benchmark's JSON, named by its path (list rows are named by
               their first field, e.g. `L=256.sfdlm_ms`)
"""

from __future__ import annotations

import json
import shlex
import statistics
import subprocess
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from engine.cli import Parser

HERE = Path(__file__).resolve().parent.parent
UNITS = {"ms", "s", "mb", "mib"}


def flatten(value: Any, prefix: str = "") -> Iterator[tuple[str, float]]:
    """(path, number) for every numeric leaf whose last name has a unit part."""
    if isinstance(value, dict):
        for k, v in value.items():
            yield from flatten(v, f"{prefix}.{k}" if prefix else str(k))
    elif isinstance(value, list):
        for i, row in enumerate(value):
            label = str(i)
            if isinstance(row, dict) and row:
                first = next(iter(row))
                label = f"{first}={row[first]}"
            yield from flatten(row, f"{prefix}.{label}" if prefix else label)
    elif isinstance(value, (int, float)) and not isinstance(value, bool) and value >= 0:
        leaf = prefix.rsplit(".", 1)[-1]
        parent = prefix.rsplit(".", 2)[-2] if prefix.count(".") >= 1 else ""
        if UNITS & set(leaf.lower().split("_")) or UNITS & set(parent.lower().split("_")):
            yield prefix, float(value)


def run_once(checkout: Path, name: str, args: Sequence[str]) -> dict[str, float]:
    cmd = [sys.executable, "-m", f"bench.{name}", *args, "--json"]
    done = subprocess.run(cmd, cwd=checkout, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        tail = (done.stderr or done.stdout).strip().splitlines()[-1:] or ["no output"]
        raise SystemExit(f"bench.{name} failed in {checkout}: {tail[0]}")
    return dict(flatten(json.loads(done.stdout)))


def compare(base: Path, head: Path, benches: Sequence[tuple[str, list[str]]], rounds: int) -> list[dict[str, Any]]:
    seen: dict[tuple[str, str], dict[str, list[float]]] = {}
    for r in range(rounds):
        order = [("base", base), ("head", head)] if r % 2 == 0 else [("head", head), ("base", base)]
        for name, args in benches:
            for side, folder in order:
                for metric, v in run_once(folder, name, args).items():
                    seen.setdefault((name, metric), {"base": [], "head": []})[side].append(v)
        print(f"round {r + 1}/{rounds} done", file=sys.stderr)
    rows = []
    for (name, metric), sides in seen.items():
        if not sides["base"] or not sides["head"]:
            continue
        b, h = statistics.median(sides["base"]), statistics.median(sides["head"])
        rows.append({"bench": name, "metric": metric, "base": b, "head": h,
                     "ratio": (h / b) if b > 0 else None, "n": min(len(sides["base"]), len(sides["head"]))})
    return rows


def table(rows: Sequence[dict[str, Any]], base: Path, head: Path) -> str:
    out = [f"base: {base}", f"head: {head}", "",
           "| bench | metric | base | head | head / base | n |", "|---|---|---:|---:|---:|---:|"]
    for r in rows:
        ratio = f"{r['ratio']:.2f}" if r["ratio"] is not None else "-"
        out.append(f"| {r['bench']} | {r['metric']} | {r['base']:.2f} | {r['head']:.2f} | {ratio} | {r['n']} |")
    return "\n".join(out)


def main(argv: Sequence[str] | None = None) -> int:
    p = Parser(prog="python -m bench.compare_commits", description=__doc__.split("\n\n")[0])
    p.add_argument("--base", required=True, type=Path, help="the other checkout (e.g. a git worktree of the old commit)")
    p.add_argument("--head", type=Path, default=HERE, help="this checkout by default")
    p.add_argument("--bench", nargs=2, action="append", metavar=("NAME", "ARGS"), required=True,
                   help='a benchmark module under bench/ and its arguments as one string, e.g. scaling "--lengths 256"')
    p.add_argument("--rounds", type=int, default=3, help="runs per side and benchmark; the median is shown (default 3)")
    p.add_argument("--json", action="store_true", help="print the rows as JSON instead of the table")
    a = p.parse_args(argv)
    if a.rounds < 1:
        p.error("--rounds must be at least 1")
    for folder in (a.base, a.head):
        if not (folder / "bench").is_dir():
            p.error(f"{folder} has no bench/ folder: give a checkout of this repository")
    benches = [(name, shlex.split(args)) for name, args in a.bench]
    rows = compare(a.base.resolve(), a.head.resolve(), benches, a.rounds)
    print(json.dumps(rows, indent=1) if a.json else table(rows, a.base, a.head))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
