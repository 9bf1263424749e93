"""After the server is restarted (a new process on the same database), the person who was drafting
opens the page again and finds the draft they left, with their pin held, and Resume finishes it.
A real browser against two app servers in turn on one data folder and port."""

from __future__ import annotations

import re

import pytest
import storage_fixtures as sf
from browser_fixtures import login, page  # noqa: F401  (page is a fixture)

from bench.live_app import FREE
from storage import repository as repo

pytestmark = [pytest.mark.browser, pytest.mark.slow]


def _serve(svc, port: int):
    from app.ui import build_ui, launch_kwargs

    demo = build_ui(svc)
    demo.queue()
    demo.launch(prevent_thread_lock=True, **launch_kwargs(svc, port=port))
    return demo


def test_the_last_draft_comes_back_after_a_restart(tiny_model_dir, tmp_path, cheap_argon2, page, monkeypatch):
    import socket

    from app.services import build_services

    monkeypatch.setenv("GRADIO_ANALYTICS_ENABLED", "False")
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    url = f"http://127.0.0.1:{port}/"
    first = build_services(tiny_model_dir, data_dir=tmp_path / "data", login_delay_s=0.0)
    sf.seed_users(first.factory)
    first.step_delay_s = 0.1
    demo = _serve(first, port)
    try:
        login(page, url, "alice")
        box = page.locator("#dd-steps input")
        box.fill("40")
        box.press("Tab")
        page.locator("#dd-generate").click()
        page.locator(FREE).nth(8).wait_for()
        target = page.locator(FREE).nth(5)
        pos = int(target.get_attribute("data-pos"))
        target.click()
        page.locator("#dd-draft-msg").get_by_text(re.compile(rf"pinned position {pos}\b")).wait_for()
        page.locator("#dd-pause").click()
        page.locator("#dd-status").get_by_text(re.compile("Paused at step")).wait_for()
    finally:
        demo.close()
        first.close()

    second = build_services(tiny_model_dir, data_dir=tmp_path / "data", login_delay_s=0.0)  # the new process
    demo = _serve(second, port)
    try:
        page.goto(url)  # the page opened again; the login session is in the database
        if page.get_by_label(re.compile("username", re.I)).count():
            login(page, url, "alice")
        page.locator("#dd-draft-msg").get_by_text(re.compile("Your last draft is open again")).wait_for()
        assert "pinned" in (page.locator(f'#dd-view span[data-pos="{pos}"]').get_attribute("class") or "")
        page.locator("#dd-resume").click()
        page.locator("#dd-status").get_by_text(re.compile("Draft complete")).wait_for(timeout=90_000)
        with second.reader() as s:
            run = repo.last_open_run(s, "alice")
            steps = repo.list_steps(s, run.id)
            (pin,) = repo.active_pins(s, run_id=run.id)
        assert steps[-1].step_index == 40 and pin.span_start == pos
        assert all(st.token_ids[pos] == steps[-1].token_ids[pos] for st in steps if st.step_index > pin.step_index)
    finally:
        demo.close()
        second.close()
