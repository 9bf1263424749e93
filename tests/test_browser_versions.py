"""A real browser (Debian's chromium through Playwright) on the launched app: an admin reads the
model versions and their lineage in the Admin screen, is refused a fine-tune that forgets (and
reads why), promotes a good one, and the next draft a person generates is written by it."""

from __future__ import annotations

import re

import pytest
from browser_fixtures import login, page  # noqa: F401  (page is a fixture)
from sqlalchemy import func, select
from test_model_versions import FORGETS, GOOD, _fine_tune

from storage import repository as repo
from storage.models import Run

pytestmark = pytest.mark.browser


def _promote(page, model_id: str, reason: str, expect: str) -> str:
    """Choose `model_id` in the version dropdown, give a reason, press Promote; the message shown
    once it says `expect` (a regular expression)."""
    page.locator("#dd-version input").click()
    page.get_by_role("option", name=model_id).click()
    page.locator("#dd-admin-reason input, #dd-admin-reason textarea").first.fill(reason)
    page.locator("#dd-promote").click()
    msg = page.locator("#dd-admin-msg")
    msg.get_by_text(re.compile(expect)).wait_for(timeout=20_000)
    return msg.inner_text()


def test_admin_promotes_a_version_and_the_next_draft_uses_it(live_app, page, tiny_model_dir):
    url, svc = live_app
    start = svc.model_id
    good = _fine_tune(tiny_model_dir, svc.models_dir, "good", GOOD)
    forgets = _fine_tune(tiny_model_dir, svc.models_dir, "forgets", FORGETS)
    login(page, url, "adam")
    page.get_by_role("tab", name="Admin").click()
    page.locator("#dd-admin-msg").get_by_text("user(s)").wait_for()
    table = page.locator("#dd-versions")
    table.get_by_text("forgets", exact=True).wait_for()
    text = table.inner_text()
    assert "good" in text and start in text and "+0.40 %" in text and "worsens the test-split bound" in text

    said = _promote(page, forgets, "try the one that forgets", "not promoted")
    assert "tolerance is 2 %" in said and "Traceback" not in said
    assert svc.model_id == start

    said = _promote(page, good, "fewer corrections on the pilot", "promoted good")
    assert f"promoted good ({good}): new drafts use it" in said
    assert svc.model_id == good
    with svc.reader() as s:
        assert repo.get_setting(s, repo.DEFAULT_MODEL) == good
    text = table.inner_text()  # one cell a line: the good version's row now ends with "default"
    assert re.search(rf"\ngood\n{re.escape(good)}\n{re.escape(start)}\n\+0\.40 %\nyes\ndefault\b", text), text
    assert text.count("\ndefault") == 2, text  # the header and the one default version

    page.get_by_role("tab", name="Draft").click()
    page.locator("#dd-generate").click()
    page.locator("#dd-status").get_by_text(re.compile("generating|Draft complete")).wait_for(timeout=30_000)
    with svc.reader() as s:
        last = s.scalar(select(func.max(Run.id)))
        assert last is not None and s.get(Run, last).model_id == good
