"""A real browser (Debian's chromium through Playwright) on the launched app: a reviewer cannot
sign off their own document, nor one still in draft (its id typed into the Review screen), and
reads why; the Admin screen's role dropdown takes no typed role."""

from __future__ import annotations

import re

import pytest
import storage_fixtures as sf
from browser_fixtures import login, page  # noqa: F401  (page is a fixture)

from storage import repository as repo
from storage.db import transaction

pytestmark = pytest.mark.browser


def _documents(svc) -> tuple[int, int]:
    """(alice's own document, accepted and awaiting review; olga's document, still a draft)."""
    with transaction(svc.factory) as s:
        own = repo.create_document(s, actor="alice", title="Alice's handover", text="Pump 7 leaks oil.")
        repo.update_document(s, own.id, actor="alice", expected_version=own.version, status="awaiting_review")
        pending = repo.create_document(s, actor="olga", title="Olga's draft", text="Valve 3 is stiff.")
        return own.id, pending.id


def _sign(page, doc_id: int) -> str:
    """Open the document by typing its id, sign an approval; the message the page shows."""
    page.locator("#dd-review-doc input").fill(str(doc_id))
    page.locator("#dd-review-open").click()
    msg = page.locator("#dd-review-msg")
    msg.get_by_text(f"reviewing document {doc_id}").wait_for()
    page.locator("#dd-review-password input").fill(sf.PASSWORD)
    page.locator("#dd-review-sign").click()
    msg.get_by_text(re.compile("may not review|is a draft|approved and signed")).wait_for()
    return msg.inner_text()


def test_reviewer_cannot_sign_off_own_work_or_a_draft(live_app, page):
    url, svc = live_app
    own, pending = _documents(svc)
    login(page, url, "alice")
    page.get_by_role("tab", name="Review").click()
    text = _sign(page, own)
    assert f"alice may not review document {own}: they created it" in text and "Traceback" not in text
    text = _sign(page, pending)
    assert f"document {pending} is a draft: its author must accept it" in text
    with svc.reader() as s:
        assert repo.list_reviews(s, own) == [] and repo.list_reviews(s, pending) == []
        assert repo.get_document(s, own).status == "awaiting_review"
        assert repo.get_document(s, pending).status == "draft"


def test_admin_role_dropdown_takes_no_typed_role(live_app, page):
    url, svc = live_app
    login(page, url, "adam")
    page.get_by_role("tab", name="Admin").click()
    msg = page.locator("#dd-admin-msg")
    msg.get_by_text("user(s)").wait_for()
    role = page.locator("#dd-admin-role input")
    name = page.locator("#dd-admin-name input, #dd-admin-name textarea").first
    assert role.input_value() == "operator"
    role.click()
    page.keyboard.type("wizard")
    assert "wizard" not in role.input_value()  # typing does not reach the box
    page.keyboard.press("Enter")
    name.click()  # leave the dropdown
    assert role.input_value() == "operator"  # the typed text was not taken: what is shown is what is sent
    role.click()
    page.get_by_role("option", name="manager").click()
    assert role.input_value() == "manager"
    name.fill("nina")
    page.locator("#dd-admin-password input").fill("long enough password")
    page.locator("#dd-admin-add").click()
    msg.get_by_text("added nina (manager)").wait_for()
    with svc.reader() as s:
        assert repo.get_user(s, "nina").role == "manager"
