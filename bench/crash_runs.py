"""Crash test of durable runs: an app process steers a run (pins, locked terms, length-changing
edits, branches from earlier steps, refinements of complete drafts) and is killed with SIGKILL at
a random moment, again and again; after every kill a new process reopens the run as its owner
would, checks that every acknowledged act is held, and resumes it.

    python -m bench.crash_runs [--kills 20] [--db sqlite,postgres] [--seed 0]

Each process runs the app's own handlers (app.draft, app.steering) on the app's services, as the
server does for a page; it starts from a fork server that has imported them already, so a
restart costs a fraction of a second and 20 kills fit in a test. Kill times are drawn from
[0.3 s, 2.5 s] after a process starts, so they land while it starts, reopens, streams and acts.

What is checked after every kill (the figures the table prints):
  lost      acknowledged acts not held after the restart: the reopened run must have exactly the
            length, held positions (token and kind) and layout the last acknowledgement recorded.
            Only when an act was committed but killed before its acknowledgement (the trail has
            more steering events than acknowledged) the check is that every acknowledged pin and
            edit is still held (in_flight counts those)
  mismatch  reopened runs whose held pin positions differ from the pins storage counts as in effect
            (active_pins). Not a loss: storage counts a pin made at step k (while paused there)
            as in effect at step k, while the app, going back to step k, holds what was held when
            step k was recorded; a branch from such a step differs (docs/RELIABILITY.md)
  broken    steps recorded after a reopen whose held positions differ from the held tokens
  running   runs left "running" once every process is dead and the leases ran out (must be 0)
  verify    python -m storage.audit verify: exit status (must be 0)
"""

from __future__ import annotations

import json
import multiprocessing as mp
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
from bench.crash_worker import USER, acks, check_finish, worker
from bench.pg import pg_schema


def run_cycles(db_url: str, model: str, workdir: Path, *, kills: int = 20, seed: int = 0) -> dict[str, Any]:
    """Kill `kills` app processes at random moments; returns the totals (see the module docstring)."""
    ctx = mp.get_context("forkserver")
    ctx.set_forkserver_preload(["torch", "app.draft", "app.steering", "app.services", "bench.crash_worker"])
    rng = random.Random(seed)
    ack, out = workdir / "acks.jsonl", workdir / "checks.jsonl"
    base = {"db_url": db_url, "model": model, "data": str(workdir / "data"), "ack": str(ack), "out": str(out)}
    _seed_users(db_url, model, workdir)
    t0 = time.perf_counter()
    for cycle in range(kills):
        p = ctx.Process(target=worker, args=({**base, "seed": seed * 1000 + cycle, "cycle": cycle},))
        p.start()
        p.join(rng.uniform(0.3, 2.5))
        if p.is_alive():
            p.kill()
        p.join()
    fin = ctx.Process(target=check_finish, args=({**base, "out": str(workdir / "final.json")},))
    fin.start()
    fin.join(300)
    checks = [json.loads(x) for x in out.read_text().splitlines()] if out.exists() else []
    final = json.loads((workdir / "final.json").read_text())
    verify = subprocess.run([sys.executable, "-m", "storage.audit", "verify", "--db-url", db_url], cwd=ROOT,
                            capture_output=True, text=True)
    return {"kills": kills, "reopened": len(checks), "acts": len(acks(ack)),
            "lost": sum(c["lost"] for c in checks) + final["lost"],
            "in_flight": sum(c["in_flight"] for c in checks), "mismatch": sum(c["mismatch"] for c in checks)
            + final["mismatch"], "broken": final["broken"], "running": final["running"],
            "verify": verify.returncode, "seconds": time.perf_counter() - t0,
            "details": [c["detail"] for c in checks if "detail" in c]}


def _seed_users(db_url: str, model: str, workdir: Path) -> None:
    from app.services import build_services
    from storage import repository as repo
    from storage.db import transaction

    svc = build_services(model, db_url=db_url, data_dir=workdir / "data", login_delay_s=0.0)
    with transaction(svc.factory) as s:
        if repo.find_user(s, USER) is None:
            repo.create_user(s, USER, "reviewer", "crash test password 1", actor="system", reason="crash test")
    svc.close()


def main(argv: list[str] | None = None) -> int:
    from engine.cli import Parser
    from engine.tiny import build_tiny

    p = Parser(prog="python -m bench.crash_runs", description=__doc__.splitlines()[0])
    p.add_argument("--kills", type=int, default=20)
    p.add_argument("--db", default="sqlite,postgres", help="sqlite, postgres or both")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--pg", default="postgresql+psycopg://postgres@127.0.0.1:5432/postgres")
    args = p.parse_args(argv)
    print(f"{'db':9} {'kills':>5} {'reopened':>8} {'acts':>5} {'lost':>4} {'in flight':>9} {'mismatch':>8} "
          f"{'broken':>6} {'running':>7} {'verify':>6} {'seconds':>7}")
    with tempfile.TemporaryDirectory() as tmp:
        model = Path(tmp) / "tiny"
        build_tiny(model)
        for db in args.db.split(","):
            work = Path(tmp) / db
            work.mkdir()
            url, drop = (f"sqlite:///{work / 'crash.sqlite3'}", None) if db == "sqlite" else pg_schema(args.pg)
            try:
                r = run_cycles(url, str(model), work, kills=args.kills, seed=args.seed)
            finally:
                if drop:
                    drop()
            print(f"{db:9} {r['kills']:>5} {r['reopened']:>8} {r['acts']:>5} {r['lost']:>4} {r['in_flight']:>9} "
                  f"{r['mismatch']:>8} {r['broken']:>6} {r['running']:>7} {r['verify']:>6} {r['seconds']:>7.1f}")
            for d in r["details"]:
                print("  lost:", json.dumps(d)[:400])
    return 0


if __name__ == "__main__":
    sys.exit(main())
