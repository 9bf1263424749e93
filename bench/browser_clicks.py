"""Click -> pin visible, measured in a real browser (Debian's chromium through Playwright) on a
launched app while the draft streams at the page's default pace. Used by bench.app_latency
--browser.

In the page, a capture listener stamps each press on a token (performance.now) and a
MutationObserver stamps the moment that token's element first carries the class "pinned"; the
difference is what a person waits between pressing and seeing the pin. A press whose token never
shows a pin within 15 s counts as lost.
"""

from __future__ import annotations

import time
from typing import Any

from bench.live_app import ARGS, CHROMIUM, FREE

INSTALL = """() => {
  window.__clicks = [];
  document.addEventListener('mousedown', (ev) => {
    const s = ev.target.closest && ev.target.closest('#dd-view span[data-pos]');
    if (!s) return;
    const rec = {pos: Number(s.dataset.pos), t0: performance.now(), t1: null, wrong: null};
    window.__clicks.push(rec);
    const root = s.parentElement;
    const obs = new MutationObserver(() => {
      const now = root.querySelector(`span[data-pos="${rec.pos}"]`);
      if (now && now.classList.contains('pinned')) { rec.t1 = performance.now(); obs.disconnect(); }
    });
    obs.observe(root, {attributes: true, subtree: true, attributeFilter: ['class']});
    setTimeout(() => obs.disconnect(), 15000);
  }, true);
}"""


def measure(svc: Any, user: tuple[str, str], runs: int, clicks: int) -> dict[str, Any]:
    """Launch the app on `svc`, log in as `user` (name, password) and click `clicks` free tokens
    in each of `runs` template drafts at the default pace; returns the latencies (ms) and counts."""
    from playwright.sync_api import sync_playwright

    from bench.live_app import launch, login

    demo, url = launch(svc)
    latencies: list[float] = []
    pressed = shown = 0
    try:
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=CHROMIUM, args=ARGS)
            page = browser.new_page(viewport={"width": 1400, "height": 1050})
            page.set_default_timeout(60_000)
            login(page, url, *user)
            page.evaluate(INSTALL)
            for r in range(runs):
                page.locator("#dd-view input, #dd-generate").first.wait_for()
                seed = page.get_by_label("Seed")
                seed.fill(str(r))
                page.locator("#dd-generate").click()
                page.locator(FREE).nth(clicks * 3).wait_for()
                for k in range(clicks):
                    if "complete" in page.locator("#dd-status").inner_text():
                        break
                    page.locator(FREE).nth(1 + 2 * k).element_handle().click()
                    time.sleep(0.3)
                page.locator("#dd-status").get_by_text("Draft complete").wait_for(timeout=120_000)
                time.sleep(0.5)
            recs = page.evaluate("window.__clicks")
            browser.close()
    finally:
        demo.close()
    for rec in recs:
        pressed += 1
        if rec["t1"] is not None:
            shown += 1
            latencies.append(rec["t1"] - rec["t0"])
    return {"pressed": pressed, "shown": shown, "latency_ms": latencies}


def available() -> bool:
    import os

    return os.path.exists(CHROMIUM)
