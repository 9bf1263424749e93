"""The app launched in this process on a free 127.0.0.1 port, and a browser page logged into it:
what the benchmarks that drive the real server (app_latency --server / --browser, screenshot) share."""

from __future__ import annotations

import re
import socket
from typing import Any

# Debian's chromium (browsers cannot be downloaded); as root it needs --no-sandbox, and the rest keep
# it from reaching for the network. The browser tests use the same (tests/browser_fixtures.py).
CHROMIUM = "/usr/bin/chromium"
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
        "--disable-sync", "--no-first-run"]
# free tokens of the draft view that can be pinned: not template text, not pinned, not noise, not empty
FREE = "#dd-view .dd-tokens span.tok:not(.template):not(.pinned):not(.special):not(:empty)"


def launch(svc: Any) -> tuple[Any, str]:
    """(the running gr.Blocks, its URL); call .close() on the first when done."""
    from app.ui import build_ui, launch_kwargs

    demo = build_ui(svc)
    demo.queue()
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    demo.launch(prevent_thread_lock=True, **launch_kwargs(svc, port=port))
    return demo, f"http://127.0.0.1:{port}/"


def login(page: Any, url: str, user: str, password: str) -> None:
    """Log a Playwright page in through the app's login form and wait for the Draft screen."""
    page.goto(url)
    page.get_by_label(re.compile("username", re.I)).fill(user)
    page.get_by_label(re.compile("password", re.I)).fill(password)
    page.get_by_role("button", name=re.compile("login", re.I)).click()
    page.locator("#dd-generate").wait_for()
