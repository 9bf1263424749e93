"""The two denoisers' training steps timed side by side, as `bench.quality --jobs 2` runs them.

    git worktree add /tmp/base <commit>          # optional: the code to compare against
    python -m bench.side_by_side [--base /tmp/base] [--window 60] [--repeats 3] [--threads 1]
                                 [--d-model 256] [--layers 6] [--vocab 8192] [--seq-len 256]
                                 [--batch-size 32] [--json]

`bench.quality --jobs 2 --threads 1` trains the SFDLM and the transformer denoiser in two
processes at once, one core each, and the equal-wall-clock target is read on that clock ("the
runs' own"). Timed alone (`--measure-speed`, `bench.train_step`, `bench.layers_ab`) a step costs
something else: the two processes share the memory bus and the last-level cache. This benchmark
measures the runs' clock without a two-hour run. Each round starts, for this checkout and then
for the base (when given), two worker processes at the same moment, one per model, each built
by its own checkout's engine (the worker runs with that checkout as its working directory and
first entry of sys.path). A worker builds the model as bench.quality does (matched parameter
counts), runs one untimed step and says it is ready; once both are, the parent sets the common
start a moment ahead and tells both (a barrier, so a worker slow to import or build on a loaded
machine delays the start rather than missing the window). Each then runs training steps
(engine.train.optimizer_step on random ids, uniform noise) until `--window` seconds have passed
since the common start, and reports the duration of every step it began in the window. Both
processes are busy for the whole window, so every timed step ran against the other model's; a
worker that began no step inside the window is an error, not a timing.

Reported per checkout: each model's median step (ms) over its steps, the rounds' medians, and
the median over rounds of the per-round ratio transformer / SFDLM (the runs' speed ratio; above
1 the SFDLM is faster). With --base, also this checkout / base per model (below 1 is faster):
the transformer's row is a control, since a change to the SFDLM's layers leaves it unchanged.
"""

from __future__ import annotations

import json
import os
import select
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

from bench.train_step import add_shape_arguments
from engine.cli import Parser

ROOT = Path(__file__).resolve().parent.parent
MODELS = ("sfdlm", "transformer")

# Runs inside the checkout under test; uses only APIs that every checkout since 9486a47 (run 5's
# code) has, so that old code can be timed by the same worker (which is why the uniform
# diffusion is built here, not by bench.train_step.uniform_diffusion, newer, and why
# build_model is looked for in engine.model, where checkouts before engine.build kept it).
# It builds and warms up, prints "ready", reads the common start (time.time() seconds) from
# stdin, and reports each timed step's duration and when it began, in seconds after that start.
WORKER = r"""
import json, sys, time
spec = json.loads(sys.argv[1])
import torch
torch.set_num_threads(spec["threads"])
from bench.quality import matched
from bench.train_step import FIRST_ID
from engine.config import DiffusionConfig, ModelConfig, TrainConfig
from engine.diffusion import make_diffusion
try:
    from engine.build import build_model
except ModuleNotFoundError:
    from engine.model import build_model
from engine.train import optimizer_step
V, B, L = spec["vocab"], spec["batch_size"], spec["seq_len"]
torch.manual_seed(0)
model = build_model(matched(ModelConfig(vocab_size=V, d_model=spec["d_model"], n_layers=spec["layers"]), spec["arch"]))
diffusion = make_diffusion(DiffusionConfig(noise="uniform"), V, forbidden_ids=range(FIRST_ID))
opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
gen = torch.Generator().manual_seed(0)
x0 = torch.randint(FIRST_ID, V, (B, L), generator=gen)
step = lambda: optimizer_step(model, spec["arch"], diffusion, opt, x0, gen, TrainConfig.clean_prob, TrainConfig.grad_clip)
step()  # warm-up, untimed
print("ready", flush=True)
start = float(sys.stdin.readline())
time.sleep(max(0.0, start - time.time()))
end, ms, began = start + spec["window"], [], []
while True:
    t0 = time.time()
    if t0 >= end:
        break
    step()
    ms.append((time.time() - t0) * 1e3)
    began.append(t0 - start)
print(json.dumps({"arch": spec["arch"], "step_ms": ms, "began_s": began}))
"""


def check_checkout(path: Path) -> Path:
    path = Path(path).resolve()
    if not (path / "engine" / "train.py").is_file() or not (path / "bench" / "quality.py").is_file():
        raise SystemExit(f"{path} is not a checkout of this repository (no engine/train.py, bench/quality.py)")
    return path


def _wait_ready(procs: dict[str, subprocess.Popen], errs: dict, checkout: Path, timeout: float) -> None:
    """Block until every worker has printed its ready line; a worker that exits, prints something
    else or is not ready within `timeout` seconds fails the round (run_pair then stops them all)."""
    deadline = time.monotonic() + timeout
    waiting = dict(procs)
    while waiting:
        left = deadline - time.monotonic()
        readable = select.select([p.stdout for p in waiting.values()], [], [], max(0.0, left))[0] if left > 0 else []
        if not readable:
            raise SystemExit(f"the {', '.join(waiting)} worker(s) in {checkout} were not ready within "
                             f"{timeout:g} s (--startup); the machine may be too loaded for this shape")
        for arch, p in list(waiting.items()):
            if p.stdout in readable:
                line = p.stdout.readline()
                if line.strip() != "ready":
                    raise SystemExit(f"the {arch} worker in {checkout} failed before its first step:\n"
                                     f"{_tail(errs[arch]) or line.strip()}")
                del waiting[arch]


def _stop(procs: dict[str, subprocess.Popen]) -> None:
    for p in procs.values():
        if p.poll() is None:
            p.kill()
        p.wait()


def _tail(f) -> str:
    f.seek(0)
    return f.read().strip()[-2000:]


def run_pair(checkout: Path, shape: dict, window: float, startup: float,
             began: dict[str, list[float]] | None = None, margin: float = 0.5) -> dict[str, list[float]]:
    """Both models' step times (ms), their workers started together in `checkout`; `began`, if
    given, receives each model's step start times (seconds after the common start).

    The workers import, build and run an untimed step (for at most `startup` seconds), then wait
    at a barrier: the common start is set `margin` seconds after the later of them is ready."""
    env = {**os.environ, "PYTHONPATH": str(checkout)}
    errs = {arch: tempfile.TemporaryFile("w+") for arch in MODELS}
    procs: dict[str, subprocess.Popen] = {}
    try:
        for arch in MODELS:
            procs[arch] = subprocess.Popen([sys.executable, "-c", WORKER,
                                            json.dumps({**shape, "arch": arch, "window": window})],
                                           cwd=checkout, env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                           stderr=errs[arch], text=True)
        _wait_ready(procs, errs, checkout, startup)
        start = time.time() + margin
        for p in procs.values():
            p.stdin.write(f"{start!r}\n")
            p.stdin.flush()
        stdout = {arch: p.communicate()[0] for arch, p in procs.items()}
        out = {}
        for arch, p in procs.items():
            if p.returncode != 0:
                raise SystemExit(f"the {arch} worker in {checkout} failed:\n{_tail(errs[arch])}")
            rep = json.loads(stdout[arch].strip().splitlines()[-1])
            if not rep["step_ms"]:
                raise SystemExit(f"the {arch} worker in {checkout} began no step inside the {window:g} s window "
                                 f"(it reached the common start after the window had closed); nothing was timed")
            out[arch] = rep["step_ms"]
            if began is not None:
                began[arch] = rep["began_s"]
        return out
    finally:
        _stop(procs)
        for f in errs.values():
            f.close()


def summarise(rounds: list[dict[str, list[float]]]) -> dict:
    """Per model: median step over all its steps and per round; the per-round ratio transformer / SFDLM."""
    med = [{a: statistics.median(r[a]) for a in MODELS} for r in rounds]
    ratios = [m["transformer"] / m["sfdlm"] for m in med]
    return {"step_ms": {a: statistics.median([x for r in rounds for x in r[a]]) for a in MODELS},
            "round_ms": {a: [round(m[a], 1) for m in med] for a in MODELS},
            "steps": {a: sum(len(r[a]) for r in rounds) for a in MODELS},
            "ratio_rounds": [round(x, 4) for x in ratios], "ratio": statistics.median(ratios)}


def measure(checkouts: dict[str, Path], shape: dict, window: float, repeats: int, startup: float) -> dict:
    rounds: dict[str, list] = {tag: [] for tag in checkouts}
    for _ in range(repeats):
        for tag, path in checkouts.items():  # this checkout, then the base, in every round
            rounds[tag].append(run_pair(path, shape, window, startup))
    res = {tag: summarise(r) for tag, r in rounds.items()}
    if "base" in res:
        res["this_over_base"] = {a: statistics.median([res["this"]["round_ms"][a][i] / res["base"]["round_ms"][a][i]
                                                        for i in range(repeats)]) for a in MODELS}
    return res


def table(res: dict, shape: dict, window: float, repeats: int) -> str:
    tokens = shape["batch_size"] * shape["seq_len"]
    lines = [f"# side by side, {shape['threads']} thread(s) each, B = {shape['batch_size']}, L = {shape['seq_len']}, "
             f"{repeats} round(s) of {window:g} s",
             "| checkout | SFDLM step, ms | transformer step, ms | steps timed | tokens/s SFDLM / transformer "
             "| transformer / SFDLM per round | median |",
             "|---|---|---|---|---|---|---|"]
    for tag in ("this", "base"):
        if tag in res:
            r = res[tag]
            s, t = r["step_ms"]["sfdlm"], r["step_ms"]["transformer"]
            lines.append(f"| {tag} | {s:,.0f} | {t:,.0f} | {r['steps']['sfdlm']} / {r['steps']['transformer']} "
                         f"| {tokens / s * 1e3:,.0f} / {tokens / t * 1e3:,.0f} "
                         f"| {', '.join(f'{x:.3f}' for x in r['ratio_rounds'])} | **{r['ratio']:.3f}** |")
    if "this_over_base" in res:
        tb = res["this_over_base"]
        lines.append(f"\nthis / base, median of rounds: SFDLM step {tb['sfdlm']:.3f}, transformer step "
                     f"{tb['transformer']:.3f} (the control)")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    p = Parser(prog="python -m bench.side_by_side", description=__doc__.splitlines()[0])
    add_shape_arguments(p, repeats=3)
    p.add_argument("--base", type=Path, help="another checkout (e.g. a git worktree) to time the same way")
    p.add_argument("--window", type=float, default=60.0, help="seconds of timed steps per pair and round")
    p.add_argument("--startup", type=float, default=600.0,
                   help="seconds a worker may take to import, build and run its untimed step before the "
                        "round fails (the common start is set once both are ready)")
    args = p.parse_args(argv)
    if args.repeats < 1 or args.window <= 0 or args.startup <= 0:
        p.error("--repeats must be at least 1, and --window and --startup positive")
    shape = {"vocab": args.vocab, "d_model": args.d_model, "layers": args.layers, "seq_len": args.seq_len,
             "batch_size": args.batch_size, "threads": args.threads or 1}
    checkouts = {"this": ROOT}
    if args.base is not None:
        checkouts["base"] = check_checkout(args.base)
    res = measure(checkouts, shape, args.window, args.repeats, args.startup)
    if args.json:
        print(json.dumps({"config": {**shape, "window": args.window, "repeats": args.repeats,
                                     "base": str(checkouts.get("base", ""))}, **res}, indent=2))
    else:
        print(table(res, shape, args.window, args.repeats))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
