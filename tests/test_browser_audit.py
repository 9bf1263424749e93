"""The Audit screen in a real browser (Debian's chromium through Playwright) on the launched app:
a manager sees the trail and bars in all four charts without touching a filter, with readable
headers; empty charts say so; an export's link works for its maker, not for an operator, and not
once expired."""

from __future__ import annotations

import re
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from browser_fixtures import login, page  # noqa: F401  (page is a fixture)

from app import draft, export_links, steering
from app.state import DraftState

pytestmark = pytest.mark.browser

CHARTS = ("#dd-chart-day", "#dd-chart-template", "#dd-chart-term", "#dd-chart-rate")


def drafted_pinned_and_edited(svc) -> None:
    """A run of the tiny model with one pin and one edit: something for every chart."""
    gen = draft.generate(svc, "alice", DraftState(), template="Shift handover", length=None, steps=6, seed=1,
                         temperature=1.0)
    ups = [next(gen), next(gen)]  # mid-run: pins and edits apply to the next steps
    st = ups[-1].state
    free = [c["i"] for c in ups[-1].payload["cells"] if "m" not in c["k"]]
    assert steering.toggle_pin(svc, "alice", st, free[0]).kind == "ok"
    edited = steering.edit_span(svc, "alice", st, free[3], free[5], " hydraulic pump", "wrong part")
    assert edited.kind == "ok", edited.message
    assert list(gen)[-1].kind == "ok"


def bar_heights(page, chart: str) -> list[float]:
    bars = page.locator(f'{chart} path[aria-roledescription="bar"]')
    return [bars.nth(i).bounding_box()["height"] for i in range(bars.count())]


def test_manager_sees_rows_and_bars_on_opening_the_audit_tab(live_app, page):
    url, svc = live_app
    svc.step_delay_s = 0.0
    drafted_pinned_and_edited(svc)
    login(page, url, "maya")
    trail = page.locator("#dd-audit-trail")
    rows = trail.locator("[role=row]:has([role=gridcell])")
    rows.first.wait_for()
    assert page.locator("#dd-audit").get_by_text(re.compile(r"\d+ event\(s\)")).count() == 1
    assert "error" not in (page.locator("#dd-audit .dd-msg").first.get_attribute("class") or "")
    assert rows.count() >= 5
    assert page.get_by_label("Document").input_value() == ""  # no filter: every document
    for chart in CHARTS:
        page.locator(f'{chart} path[aria-roledescription="bar"]').first.wait_for(state="attached")
        heights = bar_heights(page, chart)
        assert heights and max(heights) > 20, (chart, heights)  # drawn bars, not flat lines
        labels = page.locator(f"{chart} svg text").all_text_contents()
        assert not any(re.fullmatch(r"\d+\.\d{6}", t) for t in labels), labels  # categories, not numbers
    headers = trail.locator("thead th")
    assert headers.count() >= 11
    for i in range(headers.count()):
        box = headers.nth(i).bounding_box()
        assert box["height"] < 60, (headers.nth(i).inner_text(), box)  # one line, not a letter per line


def test_export_link_is_for_its_maker_only_and_expires(live_app, page):
    url, svc = live_app
    login(page, url, "maya")
    page.locator("#dd-audit-trail [role=row]:has([role=gridcell])").first.wait_for()
    for chart in ("#dd-chart-template", "#dd-chart-term", "#dd-chart-rate"):  # nobody has drafted yet
        page.locator(chart).get_by_text("No data yet").wait_for()
        assert page.locator(f'{chart} path[aria-roledescription="bar"]').count() == 0
    page.locator("#dd-audit-export-btn").click()
    link = page.locator("#dd-audit-export a[download]")
    link.wait_for()
    name = link.get_attribute("download")
    assert re.fullmatch(r"audit-\d{4}-\d{2}-\d{2}T\d{4}Z-[0-9a-f]{6}\.csv", name), name
    assert name in link.inner_text() and "15 minutes" in page.locator("#dd-audit-export").inner_text()
    href = link.get_attribute("href")
    got = page.request.get(url + href)
    assert got.status == 200
    assert got.body() == (svc.exports_dir / name).read_bytes()

    other = page.context.browser.new_context()
    try:
        olga = other.new_page()
        login(olga, url, "olga")
        olga.locator(".dd-user").wait_for()
        assert olga.request.get(url + href).status == 403
    finally:
        other.close()

    export_id = export_links.read_token(Path(href).name)[0]
    expired = export_links.make_token(export_id, datetime.now(timezone.utc) - timedelta(seconds=1))
    assert page.request.get(f"{url}exports/{expired}").status == 410
