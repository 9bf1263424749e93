"""The real browser for end-to-end tests: Debian's chromium driven by Playwright (browsers cannot
be downloaded), and logging in. Browser test files import `page` and `login` from here."""

from __future__ import annotations

import os
import re

import pytest
import storage_fixtures as sf

from bench.live_app import ARGS, CHROMIUM  # one set of browser flags for tests and benches


@pytest.fixture
def page():
    if not os.path.exists(CHROMIUM):
        pytest.skip(f"{CHROMIUM} is missing (apt-get install chromium; .ci/run installs it)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        ctx = browser.new_context(viewport={"width": 1400, "height": 1050})
        pg = ctx.new_page()
        pg.set_default_timeout(30_000)
        yield pg
        ctx.close()
        browser.close()


def login(page, url: str, user: str, password: str = sf.PASSWORD) -> None:
    page.goto(url)
    page.get_by_label(re.compile("username", re.I)).fill(user)
    page.get_by_label(re.compile("password", re.I)).fill(password)
    page.get_by_role("button", name=re.compile("login", re.I)).click()
