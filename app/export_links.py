"""Download links for audit exports: a signed, expiring token per export, the check behind
`GET /exports/{token}`, and the route itself.

Glossary
  token    "<export id>.<expiry, Unix seconds>.<signature>": the signature is an HMAC of the id
           and the expiry with a key drawn when the server starts, so a token cannot be guessed
           or altered, and every link dies with the server process
  expiry   LINK_TTL after the export was written; a later fetch is refused with 410 Gone
  who      only the user who made the export, or a user whose role manages users (an admin),
           may fetch it; anyone else logged in gets 403, nobody logged in gets 401

Export files stay in the data folder's exports/ folder, which Gradio does not serve (it is in
launch's blocked_paths and outside GRADIO_TEMP_DIR): this route is the only way to them. Every
fetch of a genuine token, served or refused, is an audit event (export.download or
export.download.refused) in the same transaction as the check.
"""

from __future__ import annotations

import hashlib
import hmac
import inspect
import re
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

from app.auth import AccessDenied, actor_for
from storage import repository as repo
from storage.audit import append_event
from storage.db import transaction
from storage.export import find_export
from storage.validate import SYSTEM_ACTOR

if TYPE_CHECKING:
    from starlette.requests import Request
    from starlette.responses import Response
    from starlette.routing import Route

    from app.services import Services

LINK_TTL = timedelta(minutes=15)
ROUTE_PREFIX = "exports"
MEDIA_TYPES = {"csv": "text/csv; charset=utf-8", "json": "application/json",
               "xlsx": "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
               "parquet": "application/vnd.apache.parquet"}
_TOKEN = re.compile(r"(\d{1,18})\.(\d{1,12})\.([0-9a-f]{32})")
_KEY = secrets.token_bytes(32)


@dataclass(frozen=True)
class Link:
    url: str  # relative to the page, e.g. exports/12.1767225600.<signature>
    token: str
    expires: datetime
    filename: str


@dataclass(frozen=True)
class Download:
    """What the route answers: status 200 with the file, or an error status with its message."""

    status: int
    message: str
    path: Path | None = None
    filename: str | None = None
    media_type: str | None = None


def _signature(export_id: int, expires: int) -> str:
    return hmac.new(_KEY, f"{export_id}.{expires}".encode(), hashlib.sha256).hexdigest()[:32]


def make_token(export_id: int, expires: datetime) -> str:
    stamp = int(expires.timestamp())
    return f"{export_id}.{stamp}.{_signature(export_id, stamp)}"


def read_token(token: str) -> tuple[int, datetime] | None:
    """(export id, expiry) of a token this server signed; None for anything else."""
    m = _TOKEN.fullmatch(token or "")
    if m is None:
        return None
    export_id, stamp = int(m.group(1)), int(m.group(2))
    if not hmac.compare_digest(m.group(3), _signature(export_id, stamp)):
        return None
    return export_id, datetime.fromtimestamp(stamp, timezone.utc)


def link_for(export_id: int, path: str | Path, *, now: datetime | None = None) -> Link:
    """A fresh link to an export, valid for LINK_TTL from `now`."""
    expires = (now or datetime.now(timezone.utc)).replace(microsecond=0) + LINK_TTL
    token = make_token(export_id, expires)
    return Link(url=f"{ROUTE_PREFIX}/{token}", token=token, expires=expires, filename=Path(path).name)


def may_fetch(role: str, name: str, maker: str) -> bool:
    """The maker of an export, and admins (the role that manages users), may fetch it."""
    return name == maker or repo.can(role, "user.manage")


def _quoted(username: str | None) -> str:
    """A session's user name for the trail's reason: quoted with its control characters escaped and
    cut to 64 characters, so that no name can break the reason's rules (storage.validate.reason)."""
    return repr(username[:64]) if isinstance(username, str) and username else "unknown"


def download_export(svc: Services, username: str | None, token: str, *, now: datetime | None = None) -> Download:
    """Check a fetch of an export link and audit it; the route turns the answer into a response."""
    parsed = read_token(token)
    if parsed is None:
        return Download(404, "no such export link")
    export_id, expires = parsed
    now = now or datetime.now(timezone.utc)
    try:
        actor = actor_for(svc, username)
    except AccessDenied:
        actor = None
    with transaction(svc.factory) as s:
        found = find_export(s, export_id)
        if found is None:
            return Download(404, "no such export link")
        record, maker_name = found
        path = Path(record.path)
        facts = {"file": path.name, "maker": maker_name, "link_expires": expires.strftime("%Y-%m-%dT%H:%M:%SZ")}

        def refuse(status: int, why: str) -> Download:
            who, role = (actor.name, actor.role) if actor is not None else (SYSTEM_ACTOR, SYSTEM_ACTOR)
            append_event(s, who, role, "export.download.refused", "export", record.id, new=facts | {"status": status},
                         reason=why if actor is not None else f"{why} (user {_quoted(username)})")
            return Download(status, why)

        if actor is None:
            return refuse(401, "log in to download an export")
        if not may_fetch(actor.role, actor.name, maker_name):
            return refuse(403, "only the manager who made an export, or an admin, may download it")
        if now >= expires:
            return refuse(410, "this export link has expired: export again for a new link")
        if not path.is_file():
            return refuse(410, "the export file is no longer on the server: export again")
        append_event(s, actor.name, actor.role, "export.download", "export", record.id, new=facts)
    return Download(200, "ok", path=path, filename=path.name, media_type=MEDIA_TYPES.get(record.format))


async def session_user(request: Request) -> str | None:
    """The user logged in to the Gradio app that serves `request`, resolved the way Gradio's own
    routes do it: the access-token cookie named after the app's cookie_id, looked up in its tokens
    (or the app's auth_dependency, when one is set)."""
    app: Any = request.app
    dependency = getattr(app, "auth_dependency", None)
    if dependency is not None:
        user = dependency(request)
        return await user if inspect.isawaitable(user) else user
    cookie_id = getattr(app, "cookie_id", None)
    if cookie_id is None:
        return None
    cookie = request.cookies.get(f"access-token-{cookie_id}") or request.cookies.get(
        f"access-token-unsecure-{cookie_id}")
    return getattr(app, "tokens", {}).get(cookie) if cookie else None


def export_route(svc: Services) -> Route:
    """`GET /exports/{token}` for the app's server (launch(app_kwargs={"routes": [...]}))."""
    from starlette.concurrency import run_in_threadpool
    from starlette.responses import FileResponse, PlainTextResponse
    from starlette.routing import Route

    no_store = {"Cache-Control": "no-store", "X-Content-Type-Options": "nosniff"}

    async def fetch(request: Request) -> Response:
        user = await session_user(request)
        got = await run_in_threadpool(download_export, svc, user, request.path_params["token"])
        if got.status != 200 or got.path is None:
            return PlainTextResponse(got.message, status_code=got.status, headers=no_store)
        return FileResponse(got.path, filename=got.filename, media_type=got.media_type, headers=no_store)

    return Route(f"/{ROUTE_PREFIX}/{{token}}", fetch, methods=["GET"], name="export_download")
