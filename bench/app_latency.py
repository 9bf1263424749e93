"""Latency of the drafting screen, on the model the app uses.

    python -m bench.app_latency [--model DIR] [--length 256] [--steps 32] [--runs 3] [--threads T]
                                [--server] [--json]

What is measured (a temporary data folder and SQLite file; one reviewer user):
  first step     time from calling the Generate handler (app.draft.generate) to its first update
                 being ready to send: create document + run (audited), the sampler's step 0,
                 record_step, render + JSON encoding of the payload. With --server also through a
                 launched app and gradio_client: from submit to the first streamed output received.
  step overhead  per later step, the time from the step being computed (the sampler's `next`
                 returns) to its update being ready to send: record_step (one SQLite transaction,
                 synchronous=FULL), frame + render of L tokens, JSON encoding. Median and p95 over
                 all steps; the denoiser's own time per step is shown beside it.
  pin effect     a pin made from another thread at a random moment of a streaming run: the number
                 of steps from the step on screen when the pin was made to the first step that holds
                 it (1 = the next step), and the wall time from the pin call returning to that step
                 being ready.
  churn          at the model's default sampler settings, on a draft of every template (seeds 0 to
                 --runs - 1): the share of free (not template) tokens that change from one step to
                 the next, averaged over the last quarter of the steps, and in the last step alone.
                 What a reviewer approves of late in a run is what they get when it is low.
  click -> pin   with --browser: a real browser (bench.browser_clicks) clicks free tokens of a
                 template draft streaming at the page's default pace; from the press to the token
                 showing as pinned, p50 / p95, and presses that never showed a pin.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from engine.cli import Parser


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = Parser(prog="python -m bench.app_latency", description=__doc__.splitlines()[0])
    p.add_argument("--model", default=None, help="model folder (default: what the app uses: assets/model, else "
                   "assets/tiny; a tiny model is built in a temporary folder if neither exists)")
    p.add_argument("--length", type=int, default=256, help="tokens of the free-length draft (default 256)")
    p.add_argument("--steps", type=int, default=32, help="reverse steps per run (default 32)")
    p.add_argument("--runs", type=int, default=3, help="runs per measurement (default 3)")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    p.add_argument("--server", action="store_true", help="also measure first step through a launched app")
    p.add_argument("--browser", action="store_true", help="also measure click -> pin visible in chromium")
    p.add_argument("--clicks", type=int, default=6, help="clicks per browser run (default 6)")
    p.add_argument("--json", action="store_true", help="print one JSON object instead of the table")
    return p.parse_args(argv)


def pct(xs: list[float], q: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(q * (len(xs) - 1))))]


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("NO_PROXY", "127.0.0.1,localhost")
    from app import draft, steering
    from app.services import build_services, default_model_dir
    from app.state import DraftState
    from storage import repository as repo
    from storage.db import transaction

    tmp = Path(tempfile.mkdtemp(prefix="dd_bench_"))
    model = Path(args.model) if args.model else default_model_dir()
    if not (model / "manifest.json").is_file():
        from engine.tiny import build_tiny

        model = tmp / "tiny"
        build_tiny(model)
    svc = build_services(model, data_dir=tmp / "data", threads=args.threads, login_delay_s=0.0)
    with transaction(svc.factory) as s:
        repo.create_user(s, "bench", "reviewer", "bench password 123")

    def gen(seed: int):
        return draft.generate(svc, "bench", DraftState(), template=draft.FREE_LENGTH, length=args.length, steps=args.steps,
                          seed=seed, temperature=1.0)

    list(gen(999))  # warm-up: kernels for this length, first SQLite writes

    first_ms: list[float] = []
    overhead_ms: list[float] = []
    compute_ms: list[float] = []
    for r in range(args.runs):
        t0 = time.perf_counter()
        it = gen(r)
        up = next(it)
        json.dumps(up.payload)
        first_ms.append((time.perf_counter() - t0) * 1000)
        ctrl = svc.runs.get(up.state.run_id)
        while True:
            t_prev = time.perf_counter()
            try:
                up = next(it)
            except StopIteration:
                break
            json.dumps(up.payload)
            total = (time.perf_counter() - t_prev) * 1000
            comp = ctrl.frames[up.step].elapsed_ms or 0.0
            compute_ms.append(comp)
            overhead_ms.append(total - comp)

    # pin effect: pins from another thread while the run streams
    effects: list[int] = []
    effect_ms: list[float] = []
    rng = random.Random(0)
    for r in range(args.runs):
        it = gen(100 + r)
        up = next(it)
        state = up.state
        ctrl = svc.runs.get(state.run_id)
        ready: dict[int, float] = {}
        done = threading.Event()

        def consume() -> None:
            for u in it:
                ready[u.step] = time.perf_counter()
            done.set()

        th = threading.Thread(target=consume)
        th.start()
        pins: list[tuple[int, int, float]] = []  # (position, step on screen, time)
        while not done.is_set() and len(pins) < 3:
            time.sleep(rng.uniform(0.0, 0.05))
            with ctrl.lock:
                on_screen = ctrl.base.index if ctrl.base is not None else 0
                free = [p for p in range(ctrl.base.length) if p not in ctrl.held] if ctrl.base is not None else []
                if on_screen >= args.steps - 1 or not free:
                    break
                pos = rng.choice(free)
                res = steering.toggle_pin(svc, "bench", state, pos)
                t_pin = time.perf_counter()
            if res.kind == "ok":
                pins.append((pos, on_screen, t_pin))
        th.join()
        with svc.reader() as s:
            steps = {x.step_index: x.token_ids for x in repo.list_steps(s, state.run_id)}
        for pos, on_screen, t_pin in pins:
            tok = steps[on_screen][pos]
            held_from = min(k for k in steps if k > on_screen and all(steps[j][pos] == tok for j in steps if j >= k))
            effects.append(held_from - on_screen)
            if held_from in ready:
                effect_ms.append((ready[held_from] - t_pin) * 1000)

    churn_quarter, churn_last = churn(svc, args.runs)
    clicks: dict[str, Any] | None = None
    if args.browser:
        from bench import browser_clicks

        if not browser_clicks.available():
            print(f"--browser: {browser_clicks.CHROMIUM} is missing (apt-get install chromium)", file=sys.stderr)
            return 2
        clicks = browser_clicks.measure(svc, ("bench", "bench password 123"), args.runs, args.clicks)

    server_first: list[float] = []
    if args.server:
        from gradio_client import Client

        from bench.live_app import launch

        demo, url = launch(svc)
        try:
            c = Client(url, auth=("bench", "bench password 123"), analytics_enabled=False,
                       verbose=False)
            for r in range(args.runs + 1):
                t0 = time.perf_counter()
                job = c.submit(draft.FREE_LENGTH, args.length, args.steps, 200 + r, 1.0, "", "fast", api_name="/generate")
                while not job.outputs():
                    time.sleep(0.002)
                if r:  # the first is a warm-up
                    server_first.append((time.perf_counter() - t0) * 1000)
                job.result(timeout=600)
        finally:
            demo.close()

    res = {
        "model": svc.model_id, "length": args.length, "steps": args.steps, "runs": args.runs,
        "threads": args.threads, "cpus": os.cpu_count(),
        "first_step_ms_median": statistics.median(first_ms), "first_step_ms_max": max(first_ms),
        "step_overhead_ms_median": statistics.median(overhead_ms), "step_overhead_ms_p95": pct(overhead_ms, 0.95),
        "step_compute_ms_median": statistics.median(compute_ms),
        "pin_effect_steps": sorted(effects), "pin_effect_ms_median": statistics.median(effect_ms) if effect_ms else None,
        "server_first_step_ms_median": statistics.median(server_first) if server_first else None,
        "default_steps": svc.ckpt.sampler_cfg.steps,
        "churn_last_quarter": statistics.mean(churn_quarter), "churn_last_step": statistics.mean(churn_last),
        "click_pin_ms_p50": pct(clicks["latency_ms"], 0.5) if clicks and clicks["latency_ms"] else None,
        "click_pin_ms_p95": pct(clicks["latency_ms"], 0.95) if clicks and clicks["latency_ms"] else None,
        "clicks_pressed": clicks["pressed"] if clicks else None, "clicks_shown": clicks["shown"] if clicks else None,
    }
    svc.close()
    if args.json:
        print(json.dumps(res, indent=1))
        return 0
    print(f"model {res['model']} · {args.length} tokens · {args.steps} steps · {args.runs} runs · "
          f"{os.cpu_count()} CPUs, torch threads {args.threads or 'default'}")
    print(f"{'measure':<46} {'value':>14}  target")
    print(f"{'Generate -> first step ready (handler), median':<46} {res['first_step_ms_median']:>11.1f} ms  < 1000 ms")
    if server_first:
        print(f"{'Generate -> first step received (server), med.':<46} "
              f"{res['server_first_step_ms_median']:>11.1f} ms  < 1000 ms")
    print(f"{'step computed -> update ready, median':<46} {res['step_overhead_ms_median']:>11.1f} ms  < 100 ms")
    print(f"{'step computed -> update ready, p95':<46} {res['step_overhead_ms_p95']:>11.1f} ms  < 100 ms")
    print(f"{'denoiser step (for scale), median':<46} {res['step_compute_ms_median']:>11.1f} ms")
    eff = res["pin_effect_steps"]
    print(f"{'pin -> held, steps after the one on screen':<46} {str(eff):>14}  1")
    if res["pin_effect_ms_median"] is not None:
        print(f"{'pin -> first step holding it ready, median':<46} {res['pin_effect_ms_median']:>11.1f} ms")
    print(f"{'tokens changed per step, last quarter (' + str(res['default_steps']) + ' steps)':<46} "
          f"{100 * res['churn_last_quarter']:>12.1f} %  few")
    print(f"{'tokens changed in the last step':<46} {100 * res['churn_last_step']:>12.1f} %  few")
    if clicks:
        lost = clicks["pressed"] - clicks["shown"]
        if clicks["latency_ms"]:
            print(f"{'click -> pin visible (browser, streaming), p50':<46} {res['click_pin_ms_p50']:>11.1f} ms")
            print(f"{'click -> pin visible (browser, streaming), p95':<46} {res['click_pin_ms_p95']:>11.1f} ms")
        print(f"{'clicks lost (no pin shown)':<46} {lost:>8} of {clicks['pressed']:<3}  0")
    return 0


def churn(svc: Any, runs: int) -> tuple[list[float], list[float]]:
    """(share of free tokens changed per step over the last quarter, in the last step), one pair
    per template draft at the model's default settings, seeds 0..runs-1."""
    from app import draft
    from app.state import DraftState

    quarter: list[float] = []
    last: list[float] = []
    steps = svc.ckpt.sampler_cfg.steps
    for name in draft.template_choices(svc)[1:]:
        for seed in range(runs):
            ups = list(draft.generate(svc, "bench", DraftState(), template=name, length=None, steps=steps,
                                      seed=seed, temperature=svc.ckpt.sampler_cfg.temperature or 1.0))
            ctrl = svc.runs.get(ups[-1].state.run_id)
            free = [p for p in range(len(ctrl.frames[steps].token_ids)) if ctrl.kinds.get(p) != "template"]
            shares = []
            for k in range(1, steps + 1):
                a, b = ctrl.frames[k - 1].token_ids, ctrl.frames[k].token_ids
                shares.append(sum(a[p] != b[p] for p in free) / max(1, len(free)))
            tail = shares[-max(1, steps // 4):]
            quarter.append(sum(tail) / len(tail))
            last.append(shares[-1])
    return quarter, last


if __name__ == "__main__":
    sys.exit(main())
