"""A real browser (Debian's chromium through Playwright) on the launched app: log in, generate,
pause, click a token to pin it and see it marked, type an edit, resume, take a screenshot of the
page (tiny model; the README's screenshot of the shipped model is python -m bench.screenshot).

DIFFDRAFT_SCREENSHOT=FILE also writes the screenshot there."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
from browser_fixtures import login, page  # noqa: F401  (page is a fixture)

pytestmark = pytest.mark.browser


def test_pin_edit_resume_in_the_browser(live_app, page, tmp_path):
    url, svc = live_app
    svc.step_delay_s = 0.5  # 16 steps: ample time to press Pause on a loaded machine
    login(page, url, "alice")
    page.locator("#dd-generate").click()
    tokens = page.locator("#dd-view .dd-tokens span[data-pos]")
    tokens.first.wait_for()
    page.locator("#dd-pause").click()
    msg, status = page.locator("#dd-draft-msg"), page.locator("#dd-status")
    status.get_by_text("Paused").wait_for()
    svc.step_delay_s = 0.05
    # a token outside the template's fixed text
    free = page.locator("#dd-view .dd-tokens span.tok:not(.template):not(:empty)")
    target = free.nth(3)
    pos = target.get_attribute("data-pos")
    target.click()
    msg.get_by_text("pinned position").wait_for()
    marked = page.locator(f'#dd-view span[data-pos="{pos}"]')
    assert "pinned" in (marked.get_attribute("class") or "")
    # type an edit over a later span
    start = int(free.nth(8).get_attribute("data-pos"))
    page.locator("#dd-span-start input").fill(str(start))
    page.locator("#dd-span-end input").fill(str(start + 2))
    page.locator("#dd-replacement textarea, #dd-replacement input").first.fill(" hydraulic pump")
    page.locator("#dd-replace").click()
    msg.get_by_text("replaced").wait_for()
    assert page.locator("#dd-view span.edited").count() >= 1
    page.locator("#dd-resume").click()
    status.get_by_text("Draft complete").wait_for(timeout=60_000)
    assert "pinned" in (page.locator(f'#dd-view span[data-pos="{pos}"]').get_attribute("class") or "")
    assert "hydraulic pump" in page.locator("#dd-view .dd-tokens").inner_text()
    assert "step 16 of 16" in page.locator("#dd-view .dd-caption").inner_text()
    # model text was built as text: no element other than the token spans inside the view
    assert page.locator("#dd-view .dd-tokens *:not(span)").count() == 0
    shot = tmp_path / "screenshot.png"
    page.screenshot(path=str(shot), full_page=False)
    assert shot.stat().st_size > 10_000
    if os.environ.get("DIFFDRAFT_SCREENSHOT"):
        dest = Path(os.environ["DIFFDRAFT_SCREENSHOT"])
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(shot, dest)


def test_operator_sees_refusal_in_the_page(live_app, page):
    url, svc = live_app
    svc.step_delay_s = 0.0
    login(page, url, "olga")
    page.locator("#dd-generate").click()
    page.locator("#dd-status").get_by_text("Draft complete").wait_for(timeout=60_000)
    page.locator("#dd-view .dd-tokens span.tok:not(.template):not(:empty)").nth(2).click()
    page.locator("#dd-draft-msg").get_by_text("may not pin").wait_for()
    assert page.locator("#dd-view span.pinned").count() == 0
    assert page.get_by_role("tab", name="Audit").count() == 0
