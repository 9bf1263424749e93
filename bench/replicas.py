"""Two app replicas on one PostgreSQL behind nginx, one of them killed mid-test: every run goes on
on the other replica and nothing acknowledged is lost.

    python -m bench.replicas [--seconds 180] [--clients 8] [--kill-at 0.5]

Starts two `python -m app` processes (the tiny model, a fresh PostgreSQL database, a 3 s run
lease) and nginx in front of them, with sticky sessions: each client is routed by a header it
sends (`hash $http_x_diffdraft_client consistent`), so that its login and its streams stay on one
replica while it lives. N clients (reviewers) then draft over gradio_client for the given time:
generate, pin a span and replace a span while the draft streams (each acknowledged when the server
answered), and wait for the draft to finish. At kill-at of the time, replica A is killed with
SIGKILL. A client whose stream breaks logs in again (nginx now sends it to B) and resumes its run by
the id the page would keep; B takes the run over once A's lease has run out.

Checked at the end: every acknowledged pin holds its token in the finished draft and every
acknowledged replacement is in it (lost), `python -m storage.audit verify` (verify), and no run is
left "running" once the leases ran out (running). Needs nginx (Debian's nginx-light) and the
PostgreSQL server; see docs/RELIABILITY.md for the figures.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
PASSWORD = "replica test password 1"
NGINX = shutil.which("nginx") or "/usr/sbin/nginx"

NGINX_CONF = """
worker_processes 1;
pid {dir}/nginx.pid;
error_log {dir}/error.log warn;
events {{ worker_connections 512; }}
http {{
  access_log off;
  client_body_temp_path {dir}/body; proxy_temp_path {dir}/proxy; fastcgi_temp_path {dir}/fcgi;
  uwsgi_temp_path {dir}/uwsgi; scgi_temp_path {dir}/scgi;
  upstream diffdraft {{
    hash $http_x_diffdraft_client consistent;
    server 127.0.0.1:{a} max_fails=1 fail_timeout=60s;
    server 127.0.0.1:{b} max_fails=1 fail_timeout=60s;
  }}
  server {{
    listen 127.0.0.1:{port};
    location / {{
      proxy_pass http://diffdraft;
      proxy_http_version 1.1;
      proxy_set_header Host $host;
      proxy_set_header Connection "";
      proxy_buffering off;
      proxy_read_timeout 300s;
      proxy_next_upstream error timeout http_502;
    }}
  }}
}}
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_http(url: str, timeout: float = 120.0) -> None:
    import httpx

    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        try:
            if httpx.get(url, timeout=2).status_code < 500:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.3)
    raise RuntimeError(f"{url} did not answer")


def start_replica(model: str, db_url: str, data: Path, port: int) -> subprocess.Popen:
    env = {**os.environ, "DIFFDRAFT_RUN_LEASE_S": "3", "GRADIO_ANALYTICS_ENABLED": "False", "HF_HUB_OFFLINE": "1",
           "NO_PROXY": "127.0.0.1,localhost"}
    return subprocess.Popen([sys.executable, "-m", "app", "--model", model, "--db-url", db_url, "--data-dir", str(data),
                             "--port", str(port), "--step-delay", "0.05", "--threads", "1"], cwd=ROOT, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


@dataclass
class Tally:
    drafts: int = 0
    resumed_after_break: int = 0
    acts: list[dict[str, Any]] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    t0: float = field(default_factory=time.monotonic)
    lock: threading.Lock = field(default_factory=threading.Lock)


def _connect(url: str, user: str):
    from gradio_client import Client

    for _ in range(60):
        try:
            return Client(url, auth=(user, PASSWORD), headers={"X-DiffDraft-Client": user}, analytics_enabled=False,
                          verbose=False)
        except Exception:  # noqa: BLE001 - the replica behind it is down: nginx moves on, try again
            time.sleep(1.0)
    raise RuntimeError(f"{user} could not log in again")


def _finish(url: str, user: str, run_ref: int, tally: Tally) -> None:
    """The client lost its stream: log in again and resume the run until it is complete."""
    for _ in range(40):
        try:
            c = _connect(url, user)
            job = c.submit("fast", run_ref, api_name="/resume")
            job.result(timeout=240)
            outs = job.outputs()
            status = str(outs[-1][5]) if outs else ""
            if "complete" in status:
                with tally.lock:
                    tally.resumed_after_break += 1
                return
            message = str(outs[-1][0]) if outs else ""
            if "already complete" in message or "is complete" in message:
                return
        except Exception:  # noqa: BLE001
            pass
        time.sleep(1.0)
    with tally.lock:
        tally.errors.append(f"{user}: run {run_ref} could not be resumed")


def client_loop(url: str, user: str, deadline: float, tally: Tally, seed: int) -> None:
    c = _connect(url, user)
    n = 0
    while time.monotonic() < deadline:
        n += 1
        run_ref = None
        try:
            job = c.submit("Free length", 40, 48, seed * 100 + n, 1.0, f"{user} draft {n}", "fast",
                           api_name="/generate")
            while len(job.outputs()) < 3 and not job.done():
                time.sleep(0.05)
            outs = job.outputs()
            if not outs:
                raise RuntimeError("no step")
            run_ref = int(outs[-1][6])
            out = c.predict(4, 6, run_ref, api_name="/pin_span")
            if "pinned" in str(out[0]) and "dd-msg-error" not in str(out[0]):
                with tally.lock:
                    tally.acts.append({"user": user, "run": run_ref, "kind": "pin", "span": [4, 6],
                                       "answer": str(out[0])[-160:], "at": round(time.monotonic() - tally.t0, 2)})
            text = f" check {user} {n}"
            out = c.predict(20, 22, text, "replica test", run_ref, api_name="/edit_span")
            if "replaced" in str(out[0]) and "dd-msg-error" not in str(out[0]):
                with tally.lock:
                    tally.acts.append({"user": user, "run": run_ref, "kind": "edit", "text": text})
            job.result(timeout=240)
            outs = job.outputs()
            if "complete" not in str(outs[-1][5]):
                raise RuntimeError("stream ended early")
            with tally.lock:
                tally.drafts += 1
        except Exception:  # noqa: BLE001 - the replica died under this client
            if run_ref is not None:
                _finish(url, user, run_ref, tally)
            c = _connect(url, user)


def _seed(model: str, db_url: str, data: Path, users: list[str]) -> None:
    from app.services import build_services
    from storage import repository as repo
    from storage.db import transaction

    svc = build_services(model, db_url=db_url, data_dir=data, login_delay_s=0.0, batching=False)
    with transaction(svc.factory) as s:
        for u in users:
            repo.create_user(s, u, "reviewer", PASSWORD, actor="system", reason="replica test")
    svc.close()


def check(model: str, db_url: str, data: Path, tally: Tally) -> dict[str, Any]:
    """Every acknowledged act held in its run's finished draft; no run left running."""
    from sqlalchemy import func, select

    from app import runs
    from app.services import build_services
    from storage import repository as repo
    from storage.db import transaction
    from storage.models import Run

    svc = build_services(model, db_url=db_url, data_dir=data, login_delay_s=0.0, batching=False)
    time.sleep(3.5)  # the leases of the stopped replicas run out
    with transaction(svc.factory) as s:
        repo.pause_interrupted(s)
    lost, unfinished, details = 0, 0, []
    for act in tally.acts:
        ctrl = runs.load_control(svc, act["run"])
        if not ctrl.complete:
            unfinished += 1
        if act["kind"] == "pin":
            with svc.reader() as s:
                pins = [p for p in repo.active_pins(s, run_id=act["run"]) if [p.span_start, p.span_end] == act["span"]]
            if not pins or any(ctrl.kinds.get(p) != "pin" for p in range(*act["span"])):
                lost += 1
                with svc.reader() as s:
                    run = repo.get_run(s, act["run"])
                    doc_pins = [(p.run_id, p.step_index, p.span_start, p.span_end, p.removed_at is not None)
                                for p in repo.active_pins(s, document_id=run.document_id)]
                    runs_of = [(r.id, r.parent_run_id, r.status) for r in repo.list_runs(s, run.document_id)]
                details.append({**act, "kinds": [ctrl.kinds.get(p) for p in range(*act["span"])],
                                "db": [(p.span_start, p.span_end) for p in pins], "doc_pins": doc_pins,
                                "runs": runs_of, "state_v": ctrl.version, "steps": ctrl.last_index})
        elif act["text"].strip() not in svc.tokenizer.decode(ctrl.base.tokens.tolist()):
            lost += 1
            details.append({**act, "final": svc.tokenizer.decode(ctrl.base.tokens.tolist())})
    with svc.reader() as s:
        running = int(s.scalar(select(func.count()).select_from(Run).where(Run.status == "running")) or 0)
    svc.close()
    verify = subprocess.run([sys.executable, "-m", "storage.audit", "verify", "--db-url", db_url], cwd=ROOT,
                            capture_output=True, text=True)
    return {"lost": lost, "unfinished": unfinished, "running": running, "verify": verify.returncode,
            "lost_details": details}


def run(db_url: str, model: str, work: Path, *, seconds: float = 180.0, clients: int = 8,
        kill_at: float = 0.5) -> dict[str, Any]:
    users = [f"client{i}" for i in range(clients)]
    _seed(model, db_url, work / "seed", users)
    pa, pb, pn = free_port(), free_port(), free_port()
    (work / "nginx").mkdir(parents=True, exist_ok=True)
    conf = work / "nginx" / "nginx.conf"
    conf.write_text(NGINX_CONF.format(dir=work / "nginx", a=pa, b=pb, port=pn))
    a = start_replica(model, db_url, work / "a", pa)
    b = start_replica(model, db_url, work / "b", pb)
    proxy = subprocess.Popen([NGINX, "-c", str(conf), "-g", "daemon off;"], stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL)
    tally = Tally()
    try:
        wait_http(f"http://127.0.0.1:{pa}/")
        wait_http(f"http://127.0.0.1:{pb}/")
        wait_http(f"http://127.0.0.1:{pn}/")
        url = f"http://127.0.0.1:{pn}/"
        t0 = tally.t0 = time.monotonic()
        deadline = t0 + seconds
        threads = [threading.Thread(target=client_loop, args=(url, u, deadline, tally, i), daemon=True)
                   for i, u in enumerate(users)]
        for t in threads:
            t.start()
        time.sleep(seconds * kill_at)
        a.send_signal(signal.SIGKILL)
        killed_at = time.monotonic() - t0
        for t in threads:
            t.join(timeout=max(1.0, deadline - time.monotonic()) + 300)
        elapsed = time.monotonic() - t0
    finally:
        for p in (proxy, a, b):
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for p in (proxy, a, b):
            try:
                p.wait(20)
            except subprocess.TimeoutExpired:
                p.kill()
    result = check(model, db_url, work / "check", tally)
    return {"clients": clients, "seconds": elapsed, "killed_at": killed_at, "drafts": tally.drafts,
            "resumed": tally.resumed_after_break, "acts": len(tally.acts), "errors": tally.errors, **result}


def main(argv: list[str] | None = None) -> int:
    from bench.pg import pg_schema
    from engine.cli import Parser
    from engine.tiny import build_tiny

    p = Parser(prog="python -m bench.replicas", description=__doc__.splitlines()[0])
    p.add_argument("--seconds", type=float, default=180.0)
    p.add_argument("--clients", type=int, default=8)
    p.add_argument("--kill-at", type=float, default=0.5, help="share of the time at which replica A is killed")
    p.add_argument("--pg", default="postgresql+psycopg://postgres@127.0.0.1:5432/postgres")
    args = p.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        model = Path(tmp) / "tiny"
        build_tiny(model)
        url, drop = pg_schema(args.pg)
        try:
            r = run(url, str(model), Path(tmp), seconds=args.seconds, clients=args.clients, kill_at=args.kill_at)
        finally:
            drop()
    print(f"{'clients':>7} {'seconds':>7} {'killed at':>9} {'drafts':>6} {'resumed':>7} {'acts':>5} {'lost':>4} "
          f"{'unfinished':>10} {'running':>7} {'verify':>6}")
    print(f"{r['clients']:>7} {r['seconds']:>7.0f} {r['killed_at']:>9.0f} {r['drafts']:>6} {r['resumed']:>7} "
          f"{r['acts']:>5} {r['lost']:>4} {r['unfinished']:>10} {r['running']:>7} {r['verify']:>6}")
    for e in r["errors"]:
        print("  error:", e)
    for d in r["lost_details"]:
        print("  lost:", d)
    return 0


if __name__ == "__main__":
    sys.exit(main())
