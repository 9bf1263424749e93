"""Serving many drafters at once: batched steps against a queue of two, side by side in one run.

    python -m bench.serving [--model DIR] [--drafters 1,4,16,32] [--steps N] [--template NAME]
                            [--threads T] [--json]

N threads each start a template draft at the same moment through the Generate handler
(app.draft.generate, at the "fast" pace, the model's default sampler settings and steps, seed =
the drafter's number) and read every step to the end, against one Services on a temporary SQLite
file, in two modes:
  queue     today's serving before batching: the model called by each draft alone, and at most two
            drafts streaming at once (Gradio's concurrency limit of 2 on Generate), the others
            waiting for a slot in arrival order (a FIFO semaphore of 2 around the whole handler)
  batched   the app's serving now: up to Limits.active_drafts drafts stream at once and the
            denoiser steps of all of them share forwards (engine.batching)
Reported per mode and N:
  drafts/min    N / the wall time from the common start to the last draft's last step, x 60
  first step    from the common start to the drafter's first update (step 0, the noise it starts
                from: what the page shows first), p50 / p95 / max over the N drafters
  step 1        to its first denoised step, p50 / p95
  batch         calls per forward of the batcher (mean / largest)
  busy          share of the wall time the batcher's worker spent in forwards
The samplers of both modes are the same code, so both modes draw the same tokens for each seed;
the bench checks it (the "same" column: drafts whose final tokens equal the queue's).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

QUEUE_SLOTS = 2


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    from engine.cli import Parser

    p = Parser(prog="python -m bench.serving", description=__doc__.splitlines()[0])
    p.add_argument("--model", default=None, help="model folder (default: what the app uses)")
    p.add_argument("--drafters", default="1,4,16,32", help="concurrent drafters, comma-separated (default 1,4,16,32)")
    p.add_argument("--steps", type=int, default=None, help="reverse steps per draft (default: the model's)")
    p.add_argument("--template", default=None, help="template name (default: the first one)")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    p.add_argument("--json", action="store_true", help="print one JSON object instead of the table")
    args = p.parse_args(argv)
    try:
        args.drafters = [int(x) for x in args.drafters.split(",") if x.strip()]
    except ValueError:
        p.error(f"--drafters must be integers separated by commas, got {args.drafters!r}")
    if not args.drafters or min(args.drafters) < 1:
        p.error("--drafters must be integers >= 1")
    if args.steps is not None and args.steps < 1:
        p.error("--steps must be >= 1")
    return args


def pct(xs: list[float], q: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(q * (len(xs) - 1))))]


def wave(svc: Any, n: int, *, template: str, steps: int, temperature: float, slots: int | None) -> dict[str, Any]:
    """N drafters started together; `slots` drafts at most streaming at once (None: no limit)."""
    from app import draft
    from app.state import DraftState

    gate = threading.Semaphore(slots) if slots else None
    go = threading.Barrier(n + 1)
    first: list[float] = [0.0] * n
    step1: list[float] = [0.0] * n
    done: list[float] = [0.0] * n
    final: list[list[int] | None] = [None] * n
    errors: list[str] = []
    t0 = 0.0

    def drafter(i: int) -> None:
        go.wait()
        try:
            if gate is not None:
                gate.acquire()
            try:
                for up in draft.generate(svc, "bench", DraftState(), template=template, length=None, steps=steps,
                                         seed=i, temperature=temperature):
                    now = time.perf_counter() - t0
                    if up.kind == "error":
                        errors.append(up.message)
                        return
                    if up.step == 0:
                        first[i] = now
                    elif up.step == 1:
                        step1[i] = now
                    if up.kind == "ok":
                        done[i] = now
                        ctrl = svc.runs.get(up.state.run_id)
                        final[i] = ctrl.frames[steps].token_ids
            finally:
                if gate is not None:
                    gate.release()
        except Exception as e:  # noqa: BLE001
            errors.append(repr(e))

    threads = [threading.Thread(target=drafter, args=(i,)) for i in range(n)]
    for th in threads:
        th.start()
    t0 = time.perf_counter()
    go.wait()
    for th in threads:
        th.join()
    wall = max(done) if not errors else float("nan")
    return {"n": n, "errors": errors, "wall_s": wall, "drafts_per_min": n / wall * 60 if wall == wall else 0.0,
            "first_s": first, "step1_s": step1, "final": final}


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    from app import draft
    from app.services import build_services, default_model_dir
    from storage import repository as repo
    from storage.db import transaction

    tmp = Path(tempfile.mkdtemp(prefix="dd_serving_"))
    model = Path(args.model) if args.model else default_model_dir()
    built: dict[str, Any] = {}
    for mode in ("queue", "batched"):
        svc = build_services(model, data_dir=tmp / mode, threads=args.threads, login_delay_s=0.0,
                             batching=mode == "batched")
        with transaction(svc.factory) as s:
            repo.create_user(s, "bench", "operator", "bench password 123")
        built[mode] = svc
    svc0 = built["queue"]
    template = args.template or draft.template_choices(svc0)[1]
    cfg = svc0.ckpt.sampler_cfg
    steps = args.steps or cfg.steps
    temperature = cfg.temperature or 1.0
    for svc in built.values():  # warm-up: kernels for this length, first SQLite writes
        wave(svc, 2, template=template, steps=steps, temperature=temperature, slots=None)

    rows: list[dict[str, Any]] = []
    for n in args.drafters:
        ref: list[list[int] | None] = []
        for mode in ("queue", "batched"):
            svc = built[mode]
            before = (svc.batcher.stats.forwards, svc.batcher.stats.calls, svc.batcher.stats.busy_s) \
                if svc.batcher else None
            svc.batcher and setattr(svc.batcher.stats, "largest", 0)
            slots = QUEUE_SLOTS if mode == "queue" else svc.limits.active_drafts
            r = wave(svc, n, template=template, steps=steps, temperature=temperature,
                     slots=slots if n > slots else None)
            if mode == "queue":
                ref = r["final"]
            b = svc.batcher.stats if svc.batcher else None
            rows.append({
                "mode": mode, "drafters": n, "errors": len(r["errors"]), "wall_s": r["wall_s"],
                "drafts_per_min": r["drafts_per_min"],
                "first_p50_s": pct(r["first_s"], 0.5), "first_p95_s": pct(r["first_s"], 0.95),
                "first_max_s": max(r["first_s"]),
                "step1_p50_s": pct(r["step1_s"], 0.5), "step1_p95_s": pct(r["step1_s"], 0.95),
                "mean_batch": (b.calls - before[1]) / max(1, b.forwards - before[0]) if b and before else None,
                "largest_batch": b.largest if b else None,
                "worker_busy": (b.busy_s - before[2]) / r["wall_s"] if b and before else None,
                "same": sum(a is not None and a == c for a, c in zip(ref, r["final"])),
            })
    meta = {"model": svc0.model_id, "template": template, "steps": steps, "cpus": os.cpu_count(),
            "threads": args.threads, "date": time.strftime("%Y-%m-%d")}
    for svc in built.values():
        svc.close()
    if args.json:
        print(json.dumps({"meta": meta, "rows": rows}, indent=1))
        return 0
    print(f"model {meta['model']} · template {template!r} · {steps} steps · {meta['cpus']} CPUs, torch threads "
          f"{args.threads or 'default'} · {meta['date']}")
    print(f"{'N':>3} {'mode':<8} {'drafts/min':>10} {'x':>5}  {'first step p50 / p95 / max (s)':>31}  "
          f"{'step 1 p50 / p95 (s)':>21}  {'batch mean/max':>14} {'busy':>5} {'same':>5} {'err':>4}")
    by = {(r["mode"], r["drafters"]): r for r in rows}
    for r in rows:
        base = by[("queue", r["drafters"])]["drafts_per_min"]
        x = r["drafts_per_min"] / base if base else float("nan")
        batch = f"{r['mean_batch']:.1f}/{r['largest_batch']}" if r["mean_batch"] is not None else "-"
        busy = f"{100 * r['worker_busy']:.0f}%" if r["worker_busy"] is not None else "-"
        print(f"{r['drafters']:>3} {r['mode']:<8} {r['drafts_per_min']:>10.1f} {x:>5.2f}  "
              f"{r['first_p50_s']:>9.2f} / {r['first_p95_s']:>6.2f} / {r['first_max_s']:>6.2f}       "
              f"{r['step1_p50_s']:>7.2f} / {r['step1_p95_s']:>6.2f}     {batch:>14} {busy:>5} {r['same']:>5} {r['errors']:>4}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
