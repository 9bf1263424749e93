"""`GET /exports/{token}` on the launched app (the same launch settings as `python -m app`), with
the Gradio session cookie of a logged-in user: the maker gets the file, an operator 403, nobody
logged in 401, an expired link 410; Gradio's own file route does not hand the export out."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timedelta, timezone
from pathlib import Path

import httpx
import pytest
import storage_fixtures as sf

from app import audit, export_links
from storage.export import read_frame


@contextmanager
def logged_in(url: str, user: str | None) -> Iterator[httpx.Client]:
    """An HTTP client holding the session cookie of `user` after Gradio's login (None: nobody)."""
    with httpx.Client(base_url=url, timeout=30, trust_env=False) as c:
        if user is not None:
            r = c.post("login", data={"username": user, "password": sf.PASSWORD})
            assert r.status_code == 200, r.text
        yield c


def test_export_link_over_http(live_app):
    url, svc = live_app
    up = audit.export_audit(svc, "maya", audit.AuditQuery(), "csv")
    assert up.kind == "ok", up.message
    name = Path(up.file).name
    with logged_in(url, "maya") as maya, logged_in(url, "olga") as olga, \
            logged_in(url, None) as anonymous:
        got = maya.get(up.link.url)
        assert got.status_code == 200, got.text
        assert got.content == Path(up.file).read_bytes()
        assert f'filename="{name}"' in got.headers["content-disposition"]
        assert got.headers["cache-control"] == "no-store"

        assert olga.get(up.link.url).status_code == 403
        assert anonymous.get(up.link.url).status_code == 401
        expired = export_links.make_token(export_links.read_token(up.link.token)[0],
                                          datetime.now(timezone.utc) - timedelta(seconds=1))
        assert maya.get(f"exports/{expired}").status_code == 410
        assert maya.get("exports/1.99.nonsense").status_code == 404

        # the exports folder is not served by Gradio, not even to the maker
        for route in (f"gradio_api/file={up.file}", f"file={up.file}"):
            r = maya.get(route)
            assert r.status_code >= 400 and b"seq" not in r.content, route

    assert len(read_frame(up.file, "csv")) >= 1
    acts = [(e.actor, e.action) for e in _events(svc)]
    assert ("maya", "export.download") in acts and ("olga", "export.download.refused") in acts
    assert ("system", "export.download.refused") in acts  # nobody logged in
    assert sum(a == "export.download.refused" for _, a in acts) == 3  # olga, nobody, expired


def _events(svc):
    from sqlalchemy import select

    from storage.models import AuditEvent

    with svc.reader() as s:
        return list(s.scalars(select(AuditEvent).where(AuditEvent.action.like("export.download%"))))


@pytest.mark.parametrize("bad", ["..%2F..%2Fdiffdraft.sqlite3", "%2E%2E"])
def test_paths_are_not_tokens(live_app, bad):
    url, _ = live_app
    with logged_in(url, "maya") as maya:
        assert maya.get(f"exports/{bad}").status_code == 404
