"""`python -m app` killed with SIGKILL in the middle of a steered draft and started again: the
owner logs in again and resumes the run with the id the page kept; the pins and the
length-changing edit made before the kill are in the finished draft, and the run is not left
"running". The real server, driven over HTTP by gradio_client."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
import storage_fixtures as sf

from storage import repository as repo

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parent.parent


def _port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _start(model: Path, data: Path, port: int) -> subprocess.Popen:
    env = {**os.environ, "DIFFDRAFT_RUN_LEASE_S": "2", "GRADIO_ANALYTICS_ENABLED": "False", "HF_HUB_OFFLINE": "1",
           "NO_PROXY": "127.0.0.1,localhost"}
    proc = subprocess.Popen([sys.executable, "-m", "app", "--model", str(model), "--data-dir", str(data), "--port",
                             str(port), "--step-delay", "0.1"], cwd=ROOT, env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    t0 = time.monotonic()
    while time.monotonic() - t0 < 90:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/", timeout=2).status_code in (200, 401, 302):
                return proc
        except httpx.HTTPError:
            time.sleep(0.3)
    proc.kill()
    raise AssertionError("the app did not start")


def _client(port: int):
    from gradio_client import Client

    return Client(f"http://127.0.0.1:{port}/", auth=("alice", sf.PASSWORD), analytics_enabled=False, verbose=False)


def test_a_killed_server_loses_no_acknowledged_act(tiny_model_dir, tmp_path, cheap_argon2):
    from app.services import build_services

    data = tmp_path / "data"
    svc = build_services(tiny_model_dir, data_dir=data, login_delay_s=0.0)
    sf.seed_users(svc.factory)
    svc.close()
    port = _port()
    proc = _start(tiny_model_dir, data, port)
    try:
        alice = _client(port)
        job = alice.submit("Free length", 48, 80, 4, 1.0, "restart test", "fast", api_name="/generate")
        while len(job.outputs()) < 4:
            assert not job.done(), "the run ended early"
            time.sleep(0.05)
        run_ref = job.outputs()[-1][6]
        out = alice.predict(5, 7, run_ref, api_name="/pin_span")
        assert "pinned" in out[0], out[0]
        out = alice.predict(20, 22, " hydraulic pump replaced", "fact", run_ref, api_name="/edit_span")
        assert "replaced" in out[0], out[0]
        time.sleep(0.3)  # a few more steps, then the process dies mid-stream
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
    probe = build_services(tiny_model_dir, data_dir=tmp_path / "probe", db_url=f"sqlite:///{data / 'diffdraft.sqlite3'}",
                           login_delay_s=0.0)
    with probe.reader() as s:
        pinned = {p: repo.get_step(s, run_ref, pin.step_index).token_ids[p]
                  for pin in repo.active_pins(s, run_id=run_ref) for p in range(pin.span_start, pin.span_end)}
    probe.close()
    assert sorted(pinned) == [5, 6]

    proc = _start(tiny_model_dir, data, port)
    try:
        alice = _client(port)  # logs in again: the old session died with the process
        # Reopen takes a run id the restarted server never offered in the runs list
        out = alice.predict(run_ref, run_ref, api_name="/open_run")
        assert f"reopened run {run_ref}" in out[0], out[0]
        time.sleep(2.5)  # the dead process's lease runs out
        job = alice.submit("fast", run_ref, api_name="/resume")
        job.result(timeout=180)
        final = job.outputs()[-1]
        assert "complete" in final[5], final[5]
        assert " hydraulic pump replaced" in final[4]
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(20)
    svc = build_services(tiny_model_dir, data_dir=data, login_delay_s=0.0)
    try:
        with svc.reader() as s:
            steps = repo.list_steps(s, run_ref)
            assert steps[-1].step_index == 80
            assert all(steps[-1].token_ids[p] == t for p, t in pinned.items())
            assert repo.get_run(s, run_ref).status == "paused"  # complete, awaiting accept
    finally:
        svc.close()
