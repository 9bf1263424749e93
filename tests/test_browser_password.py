"""A real browser (Debian's chromium through Playwright) on the launched app: a user whose password
an admin set sees only the Password tab and the reason, changes the password there, and then gets
the screens of their role; the session that changed it stays logged in. A session ended elsewhere
sends the page back to the login form."""

from __future__ import annotations

import re

import pytest
from browser_fixtures import login, page  # noqa: F401  (page is a fixture)

from app import admin
from storage import repository as repo
from storage.db import transaction

pytestmark = pytest.mark.browser


def test_a_user_must_change_a_password_an_admin_set_before_any_screen(live_app, page):
    url, svc = live_app
    assert admin.reset_password(svc, "adam", "alice", "temporary pass 1", "new laptop").kind == "ok"
    login(page, url, "alice", "temporary pass 1")
    page.locator("#dd-no-access").get_by_text("must choose a new password before using DiffDraft").wait_for()
    assert page.get_by_role("tab", name="Password").get_attribute("aria-selected") == "true"
    assert page.get_by_role("tab", name="Draft").count() == 0  # no screen of the role yet
    page.locator("#dd-password-old input").fill("temporary pass 1")
    page.locator("#dd-password-new input").fill("alice's own pass")
    page.locator("#dd-password-again input").fill("not the same one")
    page.locator("#dd-password-change").click()
    page.locator("#dd-password-msg").get_by_text("differ").wait_for()
    page.locator("#dd-password-old input").fill("temporary pass 1")
    page.locator("#dd-password-new input").fill("alice's own pass")
    page.locator("#dd-password-again input").fill("alice's own pass")
    page.locator("#dd-password-change").click()
    page.locator("#dd-password-msg").get_by_text("your password is changed").wait_for()
    page.get_by_role("tab", name="Draft").wait_for()
    page.get_by_role("tab", name="Review").click()
    assert "Traceback" not in page.content()
    page.reload()  # the session that changed the password is still logged in
    page.locator("#dd-generate").wait_for()


def test_a_session_ended_elsewhere_goes_back_to_the_login_form(live_app, page):
    url, svc = live_app
    login(page, url, "olga")
    page.locator("#dd-generate").wait_for()
    with transaction(svc.factory) as s:  # as a logout on another replica, or an admin disabling and enabling
        assert repo.end_user_sessions(s, "olga") == 1
    page.locator("#dd-generate").click()  # the event is refused (401): the page reloads to the login form
    page.get_by_role("button", name=re.compile("login", re.I)).wait_for()
    assert "Traceback" not in page.content()
    with svc.reader() as s:
        assert repo.list_documents(s) == []
