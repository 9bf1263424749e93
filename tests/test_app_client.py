"""The launched app driven by gradio_client: log in, generate, pin and edit mid-run, pause,
resume, accept, export as a manager (and be refused as a reviewer)."""

from __future__ import annotations

import re
import time

import httpx
import pytest
import storage_fixtures as sf

from storage import repository as repo

pytestmark = pytest.mark.slow


def client(url: str, user: str):
    from gradio_client import Client

    return Client(url, auth=(user, sf.PASSWORD), analytics_enabled=False, verbose=False)


def wait_outputs(job, n: int, timeout: float = 60.0):
    t0 = time.monotonic()
    while len(job.outputs()) < n:
        assert not job.done() or len(job.outputs()) >= n, "the run ended early"
        assert time.monotonic() - t0 < timeout, "no streamed steps"
        time.sleep(0.02)
    return job.outputs()


def test_draft_pin_edit_resume_accept_export(live_app, tmp_path):
    from storage.export import read_frame

    url, svc = live_app
    alice = client(url, "alice")
    job = alice.submit("Shift handover", 64, 24, 3, 1.0, "client test", "fast", api_name="/generate")
    outs = wait_outputs(job, 3)
    msg, payload, slider, runs, text, status, run_ref = outs[-1]
    assert payload["cells"] and slider["value"] >= 2
    assert run_ref == runs["value"]  # the page keeps the run id too (for a server that lost the session)
    free = [c["i"] for c in payload["cells"] if "m" not in c["k"]]
    pins = [free[0], free[3]]
    for p in pins:
        out = alice.predict(p, p + 1, run_ref, api_name="/pin_span")
        assert "pinned" in out[0], out[0]
    a, b = free[8], free[10]
    out = alice.predict(a, b, " torque wrench", "wrong tool", run_ref, api_name="/edit_span")
    assert "replaced" in out[0], out[0]
    assert "may not" not in out[0]
    alice.predict(run_ref, api_name="/pause")
    job.result(timeout=60)
    last = job.outputs()[-1]
    assert "Paused" in last[5]  # the stream's status line
    paused_at = last[2]["value"]
    assert paused_at < 24
    resumed = alice.submit("fast", run_ref, api_name="/resume")
    resumed.result(timeout=120)
    final = resumed.outputs()[-1]
    assert "complete" in final[5] and final[2]["value"] == 24
    assert " torque wrench" in final[4]

    run_id = final[3]["value"]
    with svc.reader() as s:
        steps = repo.list_steps(s, run_id)
        pin_rows = repo.active_pins(s, run_id=run_id)
        (edit,) = repo.list_edits(s, run_id=run_id)
    assert [x.step_index for x in steps] == list(range(25))
    assert sorted(p.span_start for p in pin_rows) == sorted(pins)
    for p in pin_rows:  # every pinned token is unchanged in every later step
        held = {x.token_ids[p.span_start] for x in steps if x.step_index >= p.step_index}
        assert len(held) == 1, (p.span_start, held)
    edit_ids = svc.tokenizer.encode(" torque wrench")
    assert all(x.token_ids[a:a + len(edit_ids)] == edit_ids for x in steps if x.step_index > edit.step_index)
    assert edit.old_text and edit.new_text == " torque wrench" and edit.reason == "wrong tool"

    out = alice.predict(run_ref, api_name="/accept")
    assert "awaits review" in out[0]

    refused = alice.predict(None, None, None, None, None, "", "", "csv", api_name="/export")
    assert "may not export" in refused[0] and "href" not in refused[1]

    maya = client(url, "maya")
    msg, link = maya.predict(None, None, None, None, None, "", "", "xlsx", api_name="/export")
    assert "exported" in msg, msg
    href = re.search(r'href="(exports/[^"]+)"', link).group(1)
    with httpx.Client(base_url=url, timeout=30, trust_env=False) as web:
        assert web.post("login", data={"username": "maya", "password": sf.PASSWORD}).status_code == 200
        got = web.get(href)
    assert got.status_code == 200, got.text
    path = tmp_path / "export.xlsx"
    path.write_bytes(got.content)
    df = read_frame(path, "xlsx")
    acts = set(df["action"])
    assert {"login", "run.start", "pin.add", "edit", "run.paused", "run.running", "document.update"} <= acts
    assert "export" not in acts  # alice's refused attempt wrote nothing (maya's own event follows the file)


def test_wrong_password_is_refused(live_app):
    from gradio_client import Client

    url, _ = live_app
    with pytest.raises(Exception):
        Client(url, auth=("alice", "not the password"), analytics_enabled=False, verbose=False)
