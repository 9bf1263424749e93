"""Login hardening, measured against `python -m app`: two replicas on one database.

    python -m bench.login [--db-url URL] [--app-root DIR] [--parallel 20] [--json]

Starts two app processes (replicas A and B) of the code in --app-root (default: this checkout;
point it at another worktree to measure an older commit the same way) on one database: a fresh
SQLite file in a temporary folder, or, with --db-url, a fresh schema made in that PostgreSQL
database (dropped afterwards). The first admin comes from $DIFFDRAFT_ADMIN_PASSWORD; the other
users are added with `python -m storage.users`. Every wrong password is sent from its own client
address (X-Forwarded-For, which the server takes from 127.0.0.1), so that one measure's account
throttle is seen without another's address throttle, except in "address". Then:

  parallel      --parallel wrong passwords for one account sent at once to A: seconds until the
                last answer, answers within 0.5 s, and whether the right password is then refused
  replica       7 wrong passwords on A, then one on B for the same account: B's answer time
  sequential    30 wrong passwords one after the other: total time, and whether the right password
                is refused afterwards (the account locked)
  address       10 wrong passwords for 10 names that are no user, sent at once from one address:
                seconds until the last answer
  unknown name  a password typed into the user-name field, then every column of every table
                searched for it: how many times it is found
  first run     the admin made from $DIFFDRAFT_ADMIN_PASSWORD: logins accepted out of 3 (one
                after a restart of A), and whether Admin's "add user" works before the password
                is changed
  cancel        a user's stream cancelled with its session hash, by nobody logged in and by
                another user: the HTTP answers, and the steps the run reached of those asked
  session       a login made on A used on B, and on A after A restarted: accepted?
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import httpx

from bench.pg import pg_schema

ROOT = Path(__file__).resolve().parent.parent
PASSWORD = "bench password 1"
ADMIN_PASSWORD = "first-run admin pw 1"
WRONG = "not the password"
USERS = ("alice", "bob", "carol", "dave", "erin", "frank")
STEPS = 24


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench.login", description=__doc__.splitlines()[0])
    p.add_argument("--db-url", default=None, help="PostgreSQL database to make a fresh schema in (default: a "
                   "fresh SQLite file)")
    p.add_argument("--app-root", default=str(ROOT), help="the checkout whose `python -m app` is measured "
                   "(default: this one)")
    p.add_argument("--model", default=None, help="model folder (default: the tiny model of --app-root)")
    p.add_argument("--parallel", type=int, default=20, help="wrong passwords sent at once (default 20)")
    p.add_argument("--json", action="store_true", help="print one JSON object instead of the table")
    return p.parse_args(argv)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Replica:
    """One `python -m app` process of --app-root on the shared database."""

    def __init__(self, root: Path, db_url: str, data_dir: Path, model: Path, env: dict[str, str]) -> None:
        self.root, self.db_url, self.data_dir, self.model, self.env = root, db_url, data_dir, model, env
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}/"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        log = open(self.data_dir.parent / f"app-{self.port}.log", "ab")  # noqa: SIM115 - closed with the process
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "app", "--port", str(self.port), "--data-dir", str(self.data_dir),
             "--db-url", self.db_url, "--model", str(self.model), "--step-delay", "0.1"],
            cwd=self.root, env=self.env, stdout=log, stderr=subprocess.STDOUT)
        t0 = time.monotonic()
        while time.monotonic() - t0 < 180:
            if self.proc.poll() is not None:
                raise SystemExit(f"replica on port {self.port} exited (see {log.name})")
            try:
                if httpx.get(self.url, timeout=2, trust_env=False).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.3)
        raise SystemExit(f"replica on port {self.port} did not answer within 180 s")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def login(url: str, user: str, password: str, address: str) -> tuple[float, int, httpx.Cookies]:
    """(seconds to the answer, HTTP status, cookies) of one POST /login from `address`."""
    with httpx.Client(base_url=url, timeout=120, trust_env=False) as c:
        t0 = time.monotonic()
        r = c.post("login", data={"username": user, "password": password}, headers={"X-Forwarded-For": address})
        return time.monotonic() - t0, r.status_code, c.cookies


def at_once(calls: list[tuple[Any, ...]]) -> list[tuple[float, int, httpx.Cookies]]:
    """login(*call) for every call, all started together; answers in the order of the calls."""
    out: list[Any] = [None] * len(calls)
    gate = threading.Barrier(len(calls))

    def one(i: int) -> None:
        gate.wait()
        out[i] = login(*calls[i])

    threads = [threading.Thread(target=one, args=(i,)) for i in range(len(calls))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return out


NETS = {"parallel": 1, "replica": 2, "sequential": 3, "first": 4}


def addr(tag: str, i: int) -> str:
    """The i-th client address of a measure (each measure has its own 10.N.0.0/16)."""
    return f"10.{NETS[tag]}.{i // 250}.{i % 250 + 1}"


def measure_parallel(a: Replica, n: int) -> dict[str, Any]:
    answers = at_once([(a.url, "alice", WRONG, addr("parallel", i)) for i in range(n)])
    times = sorted(t for t, _, _ in answers)
    right = login(a.url, "alice", PASSWORD, addr("parallel", n))[1]
    return {"wrong_passwords": n, "last_answer_s": round(times[-1], 2), "within_0_5_s": sum(t < 0.5 for t in times),
            "answers_s": [round(t, 2) for t in times], "right_password_then": "refused" if right != 200 else "accepted"}


def measure_replica(a: Replica, b: Replica) -> dict[str, Any]:
    on_a = [login(a.url, "bob", WRONG, addr("replica", i))[0] for i in range(7)]
    waited = login(b.url, "bob", WRONG, addr("replica", 7))[0]
    return {"failures_on_a": 7, "a_answers_s": [round(t, 2) for t in on_a], "b_answer_s": round(waited, 2)}


def measure_sequential(a: Replica) -> dict[str, Any]:
    t0 = time.monotonic()
    for i in range(30):
        login(a.url, "frank", WRONG, addr("sequential", i))
    total = time.monotonic() - t0
    right = login(a.url, "frank", PASSWORD, addr("sequential", 30))[1]
    return {"failures": 30, "total_s": round(total, 1),
            "right_password_then": "refused" if right != 200 else "accepted"}


def measure_address(a: Replica) -> dict[str, Any]:
    answers = at_once([(a.url, f"nobody{i}", WRONG, "192.0.2.77") for i in range(10)])
    return {"names": 10, "last_answer_s": round(max(t for t, _, _ in answers), 2)}


def find_everywhere(db_url: str, needle: str) -> int:
    """How many cells of the database hold `needle` (every table, every column, reflected)."""
    from sqlalchemy import MetaData, create_engine, select

    engine = create_engine(db_url)
    try:
        meta = MetaData()
        meta.reflect(engine)
        found = 0
        with engine.connect() as conn:
            for table in meta.sorted_tables:
                for row in conn.execute(select(table)):
                    found += sum(needle in (v.decode("latin-1") if isinstance(v, bytes) else str(v)) for v in row)
        return found
    finally:
        engine.dispose()


def measure_unknown_name(a: Replica, db_url: str) -> dict[str, Any]:
    typed = f"S3cret-{uuid.uuid4().hex[:8]}"
    status = login(a.url, typed, "whatever it was", "192.0.2.200")[1]
    return {"login_status": status, "found_in_database": find_everywhere(db_url, typed)}


def gradio_client(url: str, user: str, password: str) -> Any:
    from gradio_client import Client

    return Client(url, auth=(user, password), analytics_enabled=False, verbose=False)


def first_message(outputs: Any) -> str:
    text = outputs[0] if isinstance(outputs, (list, tuple)) else outputs
    return str(text)


def measure_first_run(a: Replica) -> dict[str, Any]:
    accepted = sum(login(a.url, "admin", ADMIN_PASSWORD, addr("first", i))[1] == 200 for i in range(2))
    admin = gradio_client(a.url, "admin", ADMIN_PASSWORD)
    try:
        msg = first_message(admin.predict("nina", "operator", "long enough password", api_name="/add_user"))
    finally:
        admin.close()
    return {"logins_accepted": accepted, "add_user_before_change": "done" if "added nina" in msg else "refused",
            "message": msg.split(">", 1)[-1].split("<", 1)[0][:160]}


def steps_of(db_url: str, run_id: int) -> int:
    from sqlalchemy import create_engine, text

    engine = create_engine(db_url)
    try:
        with engine.connect() as conn:
            return int(conn.scalar(text("SELECT count(*) FROM steps WHERE run_id = :r"), {"r": run_id}))
    finally:
        engine.dispose()


def measure_cancel(a: Replica, db_url: str) -> dict[str, Any]:
    dave = gradio_client(a.url, "dave", PASSWORD)
    try:
        job = dave.submit("Shift handover", 64, STEPS, 3, 1.0, "cancel bench", "fast", api_name="/generate")
        t0 = time.monotonic()
        while len(job.outputs()) < 3 and time.monotonic() - t0 < 60:
            time.sleep(0.02)
        body = {"session_hash": dave.session_hash, "fn_index": dave._infer_fn_index("/generate", None),
                "event_id": job.communicator.event_id if job.communicator else ""}
        with httpx.Client(base_url=a.url, timeout=30, trust_env=False) as nobody:
            by_nobody = nobody.post("gradio_api/cancel", json=body).status_code
        with httpx.Client(base_url=a.url, timeout=30, trust_env=False) as erin:
            erin.post("login", data={"username": "erin", "password": PASSWORD},
                      headers={"X-Forwarded-For": "192.0.2.201"})
            by_other = erin.post("gradio_api/cancel", json=body).status_code
        try:
            job.result(timeout=120)
        except Exception:  # noqa: BLE001 - a cancelled job ends with an error on the client; its steps are counted
            pass
        outs = job.outputs()
        run_id = outs[-1][3]["value"] if outs else None
    finally:
        dave.close()
    steps = steps_of(db_url, run_id) - 1 if run_id else 0
    return {"cancel_by_nobody": by_nobody, "cancel_by_other_user": by_other, "steps_reached": steps,
            "steps_asked": STEPS}


def measure_session(a: Replica, b: Replica) -> dict[str, Any]:
    cookies = login(a.url, "carol", PASSWORD, "192.0.2.210")[2]
    with httpx.Client(base_url=b.url, cookies=cookies, timeout=30, trust_env=False) as c:
        on_b = c.get("gradio_api/user").json()
    a.stop()
    a.start()
    with httpx.Client(base_url=a.url, cookies=cookies, timeout=30, trust_env=False) as c:
        after_restart = c.get("gradio_api/user").json()
    admin_after_restart = login(a.url, "admin", ADMIN_PASSWORD, addr("first", 9))[1] == 200
    return {"login_on_a_used_on_b": "accepted" if on_b == "carol" else "refused",
            "after_a_restarted": "accepted" if after_restart == "carol" else "refused",
            "admin_login_after_restart": admin_after_restart}


def run(args: argparse.Namespace) -> dict[str, Any]:
    root = Path(args.app_root).resolve()
    model = Path(args.model) if args.model else root / "assets" / "tiny"
    tmp = Path(tempfile.mkdtemp(prefix="bench-login-"))
    drop = None
    if args.db_url:
        db_url, drop = pg_schema(args.db_url.replace("postgresql://", "postgresql+psycopg://", 1))
    else:
        db_url = f"sqlite:///{tmp / 'shared.sqlite3'}"
    env = dict(os.environ, GRADIO_ANALYTICS_ENABLED="False", HF_HUB_OFFLINE="1",
               NO_PROXY="127.0.0.1,localhost", no_proxy="127.0.0.1,localhost", DIFFDRAFT_ADMIN_PASSWORD=ADMIN_PASSWORD)
    a = Replica(root, db_url, tmp / "a", model, env)
    b = Replica(root, db_url, tmp / "b", model, env)
    complete = False
    try:
        a.start()  # makes the admin from $DIFFDRAFT_ADMIN_PASSWORD
        for name in USERS:
            subprocess.run([sys.executable, "-m", "storage.users", "add", name, "--role", "reviewer",
                            "--db-url", db_url], cwd=root, env=dict(env, DIFFDRAFT_PASSWORD=PASSWORD), check=True,
                           capture_output=True)
        b.start()
        out: dict[str, Any] = {"app_root": str(root), "database": "postgresql" if args.db_url else "sqlite"}
        jobs = {"parallel": lambda: measure_parallel(a, args.parallel), "replica": lambda: measure_replica(a, b),
                "sequential": lambda: measure_sequential(a), "address": lambda: measure_address(a)}
        results: dict[str, Any] = {}
        threads = [threading.Thread(target=lambda k=k, f=f: results.__setitem__(k, f())) for k, f in jobs.items()]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        out.update({k: results.get(k, f"failed (the app logs are in {tmp})") for k in jobs})
        out["unknown_name"] = measure_unknown_name(a, db_url)
        out["first_run"] = measure_first_run(a)
        out["cancel"] = measure_cancel(a, db_url)
        out["session"] = measure_session(a, b)
        complete = len(results) == len(jobs)
        return out
    finally:
        a.stop()
        b.stop()
        if drop is not None:
            drop()
        if complete:
            shutil.rmtree(tmp, ignore_errors=True)
        else:
            print(f"bench.login: the app logs are kept in {tmp}", file=sys.stderr)


def table(out: dict[str, Any]) -> str:
    lines = [f"bench.login: {out['app_root']} on {out['database']}", ""]
    for key in ("parallel", "replica", "sequential", "address", "unknown_name", "first_run", "cancel", "session"):
        value = out.get(key)
        if isinstance(value, dict):
            shown = ", ".join(f"{k} {v}" for k, v in value.items() if k not in ("answers_s", "message"))
            lines.append(f"{key:<13} {shown}")
            if "answers_s" in value:
                lines.append(f"{'':<13} answers (s): {value['answers_s']}")
            if value.get("message"):
                lines.append(f"{'':<13} message: {value['message']}")
        else:
            lines.append(f"{key:<13} {value}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    out = run(args)
    print(json.dumps(out, indent=1) if args.json else table(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
