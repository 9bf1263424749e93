"""The draft screen in a real browser while the draft streams: clicks and selections land on the
token the person saw (at the default "watch" pace and at 10 steps a second), acts' confirmations
stay on screen while the stream goes on, and numbers out of range are refused, not clamped."""

from __future__ import annotations

import dataclasses
import re
import time

import pytest
from playwright.sync_api import TimeoutError as PlaywrightTimeout
from browser_fixtures import login, page  # noqa: F401  (page is a fixture)

from sqlalchemy import func, select

from app.common import storable
from bench.live_app import FREE
from storage import repository as repo
from storage.models import Run

pytestmark = pytest.mark.browser

# records, at the moment of every press on a token, the token's position and text
RECORD_PRESSES = """() => {
  window.__presses = [];
  document.addEventListener('mousedown', (ev) => {
    const s = ev.target.closest && ev.target.closest('#dd-view span[data-pos]');
    if (s) window.__presses.push({pos: Number(s.dataset.pos), text: s.textContent});
  }, true);
}"""
RECORD_DRAG = """() => {
  const at = (ev) => { const s = document.elementFromPoint(ev.clientX, ev.clientY);
                       const t = s && s.closest('#dd-view span[data-pos]'); return t ? Number(t.dataset.pos) : null; };
  document.addEventListener('mousedown', (ev) => { window.__drag = [at(ev)]; }, true);
  document.addEventListener('mouseup', (ev) => { window.__drag.push(at(ev)); }, true);
}"""


def _steps(page, n: int) -> None:
    box = page.locator("#dd-steps input")
    box.fill(str(n))
    box.press("Tab")


def _wait_text(loc, pattern, timeout: int = 20_000) -> None:
    try:
        loc.get_by_text(pattern).wait_for(timeout=timeout)
    except Exception as exc:  # noqa: BLE001 - say what the line showed instead
        raise AssertionError(f"waited for {pattern!r}, the line shows {loc.inner_text()!r}") from exc


def _streaming_step(page) -> int:
    m = re.search(r"step (\d+) of", page.locator("#dd-view .dd-caption").inner_text())
    return int(m.group(1)) if m else -1


def _click_visible(tokens, first: int):
    """Press the token element `first` of `tokens` (or the next ones): the element is kept,
    whatever its text becomes, unless it shows nothing when pressed. The random tiny model may
    put the first bytes of a character there, which the screen gives to the token that completes
    it (engine.tokenizer.pieces): the span is empty and nobody can press it."""
    for j in range(first, first + 3):
        target = tokens.nth(j).element_handle()
        try:
            target.click(timeout=5_000)
            return target
        except PlaywrightTimeout:
            if target.text_content() != "":
                raise
    raise AssertionError("three tokens in a row showed nothing")


def _text(s: str) -> str:
    """A token's text without U+FFFD: the bytes of a broken character are shown with the token
    that ends them (engine.tokenizer.pieces) but belong to the one before in a pin's text."""
    return s.replace("\ufffd", "")


@pytest.mark.parametrize("pace", ["watch", "10 steps a second"])
def test_clicks_during_a_stream_pin_the_token_that_was_seen(live_app, page, pace):
    url, svc = live_app
    login(page, url, "alice")
    if pace == "watch":  # the page's default pace, nothing else slows the stream
        svc.step_delay_s = 0.0
        steps = 40
    else:
        svc.step_delay_s = 0.1
        page.get_by_label("As fast as possible").check()
        steps = 60
    _steps(page, steps)
    page.evaluate(RECORD_PRESSES)
    page.locator("#dd-generate").click()
    page.locator(FREE).nth(12).wait_for()
    status, msg = page.locator("#dd-status"), page.locator("#dd-draft-msg")
    clicked: list[int] = []
    plain = page.locator(FREE).filter(has_text=re.compile(r"^[!-~][ -~]*$|^ [!-~]+$"))  # printable ASCII text
    for k in range(5):
        assert "complete" not in status.inner_text(), "the draft finished before the clicks"
        target = _click_visible(plain, 2 + 3 * k)
        pos = page.evaluate("window.__presses")[-1]["pos"]
        assert pos == int(target.get_attribute("data-pos"))
        _wait_text(msg, re.compile(rf"pinned position {pos}\b"))
        clicked.append(pos)
    before = _streaming_step(page)
    time.sleep(1.2)  # several more steps: the last act's confirmation is still on screen
    assert _streaming_step(page) > before
    assert f"pinned position {clicked[-1]}" in msg.inner_text()
    status.get_by_text("Draft complete").wait_for(timeout=60_000)
    presses = page.evaluate("window.__presses")
    assert [p["pos"] for p in presses] == clicked
    with svc.reader() as s:
        run_id = s.scalar(select(func.max(Run.id)))  # the one run of this page
        pins = {p.span_start: p.text for p in repo.active_pins(s, run_id=run_id)}
        last = repo.list_steps(s, run_id)[-1]
    assert sorted(pins) == sorted(clicked), "every click registered, on the position pressed"
    for p in presses:  # the token pinned is the one on screen at the press, and it stayed
        assert _text(pins[p["pos"]]) in (_text(storable(p["text"])), _text(repr(p["text"])))  # NUL: stored as U+FFFD
        assert _text(svc.tokenizer.decode([last.token_ids[p["pos"]]])) == _text(p["text"])
        assert "pinned" in (page.locator(f'#dd-view span[data-pos="{p["pos"]}"]').get_attribute("class") or "")


def test_a_selection_during_a_stream_fills_the_span_it_covers(live_app, page):
    url, svc = live_app
    svc.step_delay_s = 0.0
    login(page, url, "alice")
    _steps(page, 40)
    page.evaluate(RECORD_DRAG)
    page.locator("#dd-generate").click()
    page.locator(FREE).nth(10).wait_for()
    a, b = page.locator(FREE).nth(4).element_handle(), page.locator(FREE).nth(6).element_handle()
    ba, bb = a.bounding_box(), b.bounding_box()
    page.mouse.move(ba["x"] + 1, ba["y"] + ba["height"] / 2)
    page.mouse.down()
    page.mouse.move(bb["x"] + bb["width"] - 1, bb["y"] + bb["height"] / 2, steps=4)
    page.mouse.up()
    drag = page.evaluate("window.__drag")
    pa, pb = min(drag), max(drag)  # the tokens under the pointer at press and at release
    start, end = page.locator("#dd-span-start input"), page.locator("#dd-span-end input")
    try:
        page.wait_for_function("([s, e]) => document.querySelector('#dd-span-start input').value === String(s) && "
                               "document.querySelector('#dd-span-end input').value === String(e)", arg=[pa, pb + 1],
                               timeout=20_000)
    except Exception as exc:  # noqa: BLE001
        raise AssertionError(f"selected {pa}..{pb}, the span fields show {start.input_value()}.."
                             f"{end.input_value()}") from exc
    assert (int(start.input_value()), int(end.input_value())) == (pa, pb + 1)
    page.locator("#dd-replacement textarea, #dd-replacement input").first.fill(" torque wrench")
    page.locator("#dd-replace").click()
    page.locator("#dd-draft-msg").get_by_text(f"replaced [{pa}, {pb + 1})").wait_for(timeout=10_000)
    page.locator("#dd-status").get_by_text("Draft complete").wait_for(timeout=60_000)
    assert "torque wrench" in page.locator("#dd-view .dd-tokens").inner_text()


@pytest.mark.parametrize("value", ["-1", "0", "1000000000"])
def test_steps_out_of_range_are_refused_in_the_page(live_app, page, value):
    url, _svc = live_app
    login(page, url, "alice")
    _steps(page, value)
    page.locator("#dd-generate").click()
    page.locator("#dd-draft-msg").get_by_text("steps must be between 1 and 512").wait_for(timeout=10_000)
    assert page.locator("#dd-view span[data-pos]").count() == 0


@pytest.fixture
def kinds_model(app_services):
    """The tiny model with a free-length default of its own (engine.config.for_kind), set before
    live_app builds the page."""
    cfg = app_services.ckpt.sampler_cfg
    app_services.ckpt.sampler_cfg = dataclasses.replace(cfg, free_steps=cfg.steps + 8)
    return cfg.steps, cfg.steps + 8


def test_the_steps_field_follows_the_template_choice(kinds_model, live_app, page):
    template_steps, free_steps = kinds_model
    url, _ = live_app
    login(page, url, "olga")
    box = page.locator("#dd-steps input")
    assert box.input_value() == str(template_steps)
    page.get_by_text(f"{template_steps} for a template, {free_steps} for free length").wait_for()

    def choose(name: str) -> None:
        page.locator("#dd-template input").click()
        page.get_by_role("option", name=name).click()

    choose("Free length")
    page.wait_for_function(f"document.querySelector('#dd-steps input').value === '{free_steps}'")
    choose("Shift handover")
    page.wait_for_function(f"document.querySelector('#dd-steps input').value === '{template_steps}'")
    _steps(page, 30)  # the person's own number stays
    choose("Free length")
    page.locator("#dd-length input").fill("20")
    page.locator("#dd-generate").click()
    page.locator("#dd-status").get_by_text("Draft complete").wait_for(timeout=60_000)
    assert box.input_value() == "30"
    assert "step 30 of 30" in page.locator("#dd-view .dd-caption").inner_text()
