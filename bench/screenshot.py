"""The README's screenshot: the shipped model's draft being steered in a real browser.

    python -m bench.screenshot [--model DIR] [--out docs/screenshot.png] [--template NAME] [--seed N]

Launches the app on a temporary data folder, logs in as a reviewer, starts a template draft at
the page's default (watch) pace, pins two tokens a third of the way and locks a term two thirds
of the way while it streams, and saves the page when the draft has a few steps left. Needs Debian's chromium (/usr/bin/chromium).
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
from pathlib import Path

from engine.cli import Parser


def main(argv: list[str] | None = None) -> int:
    p = Parser(prog="python -m bench.screenshot", description=__doc__.splitlines()[0])
    p.add_argument("--model", default="assets/model", help="model folder (default assets/model)")
    p.add_argument("--out", default="docs/screenshot.png", help="PNG to write (default docs/screenshot.png)")
    p.add_argument("--template", default="Corrective action", help="template to draft (default Corrective action)")
    p.add_argument("--seed", type=int, default=1, help="seed of the draft (default 1)")
    p.add_argument("--term", default="corrosion", help="term to lock while it streams (default \"corrosion\")")
    args = p.parse_args(argv)
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("NO_PROXY", "127.0.0.1,localhost")
    from bench.browser_clicks import available
    from bench.live_app import ARGS, CHROMIUM, FREE

    if not available():
        print(f"python -m bench.screenshot: error: {CHROMIUM} is missing (apt-get install chromium)", file=sys.stderr)
        return 2
    from playwright.sync_api import sync_playwright

    from app.services import build_services
    from bench.live_app import launch, login
    from storage import repository as repo
    from storage.db import transaction

    tmp = Path(tempfile.mkdtemp(prefix="dd_shot_"))
    svc = build_services(Path(args.model), data_dir=tmp / "data", login_delay_s=0.0)
    with transaction(svc.factory) as s:
        repo.create_user(s, "rita", "reviewer", "screenshot password 1")
    demo, url = launch(svc)
    try:
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=CHROMIUM, args=ARGS)
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            page.set_default_timeout(60_000)
            login(page, url, "rita", "screenshot password 1")
            page.locator("#dd-template input").fill(args.template)
            page.locator("#dd-template input").press("Enter")
            page.get_by_label("Seed", exact=True).fill(str(args.seed))
            page.locator("#dd-generate").click()
            total = svc.ckpt.sampler_cfg.steps
            _wait_step(page, total // 3)
            for k in (6, 20):
                page.locator(FREE).nth(k).element_handle().click()
                time.sleep(0.3)
            _wait_step(page, 2 * total // 3)  # the term is written by then
            page.locator("#dd-term input, #dd-term textarea").first.fill(args.term)
            page.locator("#dd-lock").click()
            _wait_step(page, total - 6)
            page.locator("#dd-pause").click()
            page.locator("#dd-status").get_by_text("Paused").wait_for()
            out = Path(args.out)
            out.parent.mkdir(parents=True, exist_ok=True)
            page.evaluate("window.scrollTo(0, 0)")
            time.sleep(0.3)
            page.screenshot(path=str(out), full_page=False)
            browser.close()
    finally:
        demo.close()
        svc.close()
    print(f"wrote {args.out} ({svc.model_id})")
    return 0


def _wait_step(page, k: int) -> None:
    page.wait_for_function("(k) => { const c = document.querySelector('#dd-view .dd-caption'); "
                           "const m = c && c.textContent.match(/step (\\d+) of/); return m && Number(m[1]) >= k; }",
                           arg=k, timeout=120_000)


if __name__ == "__main__":
    sys.exit(main())
