"""The launched server: only the owner's own logged-in session cancels its events, reads its stream
or closes it; login sessions live in the database (another replica and a restarted one accept
them, a lost one is refused cleanly); the login form stores no name that is no user and slows one
client address across names."""

from __future__ import annotations

import dataclasses
import json
import time
from collections.abc import Iterator
from contextlib import contextmanager

import httpx
import pytest
import storage_fixtures as sf
from sqlalchemy import select

from storage import repository as repo
from storage.models import AuditEvent, Base, Run

pytestmark = pytest.mark.slow


def client(url: str, user: str):
    from gradio_client import Client

    return Client(url, auth=(user, sf.PASSWORD), analytics_enabled=False, verbose=False)


@contextmanager
def web(url: str, user: str | None = None, **kw) -> Iterator[httpx.Client]:
    """An httpx client on the app, logged in as `user` when given."""
    with httpx.Client(base_url=url, timeout=30, trust_env=False, **kw) as c:
        if user is not None:
            assert c.post("login", data={"username": user, "password": sf.PASSWORD}).status_code == 200
        yield c


def wait_outputs(job, n: int, timeout: float = 60.0):
    t0 = time.monotonic()
    while len(job.outputs()) < n:
        assert not job.done(), "the run ended early"
        assert time.monotonic() - t0 < timeout, "no streamed steps"
        time.sleep(0.02)
    return job.outputs()


def test_only_the_owner_cancels_reads_or_closes_a_page_session(live_app):
    url, svc = live_app
    alice = client(url, "alice")
    job = alice.submit("Shift handover", 64, 24, 3, 1.0, "cancel test", "fast", api_name="/generate")
    wait_outputs(job, 3)
    fn_index = alice._infer_fn_index("/generate", None)
    body = {"session_hash": alice.session_hash, "fn_index": fn_index, "event_id": job.communicator.event_id}
    with web(url) as nobody, web(url, "bob") as bob:
        refused = nobody.post("gradio_api/cancel", json=body)
        assert refused.status_code == 401 and refused.json() == {"error": "not logged in: log in first"}
        assert nobody.post("gradio_api/cancel", json={**body, "event_id": "x"}).status_code == 401
        refused = bob.post("gradio_api/cancel", json=body)
        assert refused.status_code == 403 and "another user" in refused.json()["error"]
        assert bob.get("gradio_api/queue/data", params={"session_hash": alice.session_hash}).status_code == 403
        assert bob.get(f"gradio_api/heartbeat/{alice.session_hash}").status_code == 403
        assert nobody.get(f"gradio_api/heartbeat/{alice.session_hash}").status_code == 401
        assert bob.get("gradio_api/deep_link", params={"session_hash": alice.session_hash}).status_code == 403
        event = job.communicator.event_id
        assert nobody.post(f"gradio_api/stream/{event}/close").status_code == 401
        assert bob.post(f"gradio_api/stream/{event}/close").status_code == 403
        # bob cannot run an event in alice's page session either
        joined = bob.post("gradio_api/queue/join", json={"data": [], "fn_index": fn_index,
                                                         "session_hash": alice.session_hash})
        assert joined.status_code == 403
    job.result(timeout=120)
    final = job.outputs()[-1]
    assert "complete" in final[5] and final[2]["value"] == 24, final[5]
    with svc.reader() as s:
        run = repo.get_run(s, final[3]["value"])
        assert len(repo.list_steps(s, run.id)) == 25  # steps 0..24: nothing stopped it
    # the owner's own cancel still works: the stream stops early
    job2 = alice.submit("Shift handover", 64, 24, 4, 1.0, "own cancel", "fast", api_name="/generate")
    wait_outputs(job2, 2)
    assert job2.cancel()
    t0 = time.monotonic()
    while not job2.done() and time.monotonic() - t0 < 20:
        time.sleep(0.05)
    assert job2.done()
    time.sleep(1.0)
    with svc.reader() as s:
        last = s.scalar(select(Run).order_by(Run.id.desc()).limit(1))
        assert last.id != run.id and len(repo.list_steps(s, last.id)) < 25


def test_sessions_work_on_another_replica_and_after_a_restart(live_app, tiny_model_dir, tmp_path):
    from app.services import build_services
    from bench.live_app import launch

    url_a, svc_a = live_app
    db_url = str(svc_a.engine.url.render_as_string(hide_password=False))
    svc_b = build_services(tiny_model_dir, db_url=db_url, data_dir=tmp_path / "b", login_delay_s=0.0)
    demo_b, url_b = launch(svc_b)
    try:
        with web(url_a, "maya") as on_a:
            cookies = dict(on_a.cookies)
            assert on_a.get("gradio_api/user").json() == "maya"
        with web(url_b, cookies=cookies) as on_b:
            assert on_b.get("gradio_api/user").json() == "maya"  # logged in on A, known on B
        demo_b.close()  # B restarts: a new process, a new Gradio app, the same database
        svc_b.close()
        svc_b = build_services(tiny_model_dir, db_url=db_url, data_dir=tmp_path / "b2", login_delay_s=0.0)
        demo_b, url_b = launch(svc_b)
        with web(url_b, cookies=cookies) as on_b:
            assert on_b.get("gradio_api/user").json() == "maya"
            assert on_b.get("logout", follow_redirects=False).status_code == 302
        with web(url_a, cookies=cookies) as on_a:  # logged out on B: A refuses the cookie, cleanly
            assert on_a.get("gradio_api/user").json() is None
            refused = on_a.post("gradio_api/queue/join", json={"data": [], "fn_index": 0, "session_hash": "x1"})
            assert refused.status_code == 401 and "Not authenticated" in refused.text
            page = on_a.get("")
            assert page.status_code == 200 and "Traceback" not in page.text
    finally:
        demo_b.close()
        svc_b.close()
    with svc_a.reader() as s:
        acts = list(s.scalars(select(AuditEvent.action).where(AuditEvent.actor == "maya")))
    assert acts.count("login") == 1 and acts.count("logout") == 1


def test_the_login_form_stores_no_unknown_name_and_slows_an_address(live_app):
    url, svc = live_app
    svc.login_policy = dataclasses.replace(svc.login_policy, base_delay_s=0.2, address_allowance=2)
    secret = "Hunter2-typed-in-the-wrong-box"
    with web(url) as w:
        for i in range(4):
            got = w.post("login", data={"username": secret, "password": f"attempt {i}"},
                         headers={"X-Forwarded-For": "203.0.113.7"})
            assert got.status_code == 400 and got.json()["detail"] == "Incorrect credentials."
        t0 = time.monotonic()
        assert w.post("login", data={"username": "alice", "password": "wrong password"},
                      headers={"X-Forwarded-For": "203.0.113.7"}).status_code == 400
        assert time.monotonic() - t0 >= 0.3  # 4 failures from this address, 2 allowed: delay(2) = 0.4 s
        t0 = time.monotonic()
        assert w.post("login", data={"username": "bob", "password": sf.PASSWORD},
                      headers={"X-Forwarded-For": "198.51.100.2"}).status_code == 200
        assert time.monotonic() - t0 < 0.3
    with svc.reader() as s:
        failed = s.scalars(select(AuditEvent).where(AuditEvent.action == "login.failed")).all()
        assert [e.object_id for e in failed] == [repo.UNKNOWN_USER] * 4 + ["alice"]
        assert {json.loads(e.new_value)["address"] for e in failed} == {"203.0.113.7"}  # as the proxy said
        for table in Base.metadata.sorted_tables:
            for row in s.execute(select(table)).all():
                assert secret not in " ".join(map(str, row)), table.name
