"""SessionGuard: an ASGI middleware in front of Gradio's routes (installed by app.ui.launch_kwargs)
that ties every page session to its logged-in user.

What it does, request by request (paths as Gradio 6.31 serves them, under /gradio_api):
  any request           puts the database-backed login sessions (app.sessions.LoginSessions) and
                        the database's cookie id in place of Gradio's in-memory ones, once
  POST /login           makes the client address known to the login check (app.auth.CLIENT_ADDRESS)
  GET  /logout          ends the user's sessions in the database (audited), then lets Gradio answer
  POST /queue/join, /run/*, /api/*, /component_server   the first logged-in user to send a
                        session hash owns it; another user sending it is refused (403)
  GET  /queue/data, /heartbeat/{hash}, /deep_link, /stream/{hash}/...   reading a page's stream
                        or state, or closing it, is for its owner only (403 for another user, 401
                        for nobody logged in)
  POST /stream/{event id}, /stream/{event id}/close   for the owner of the event's page session
  POST /cancel          cancels only when the requester is logged in (else 401) and owns the
                        session hash (else 403): nothing is cancelled otherwise
Refusals are JSON: {"error": "..."}.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Awaitable, Callable, MutableMapping
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs

from starlette.requests import Request
from starlette.responses import JSONResponse

from app.auth import CLIENT_ADDRESS

if TYPE_CHECKING:
    from app.services import Services

log = logging.getLogger(__name__)

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

API = "/gradio_api"
MAX_BODY_BYTES = 8 * 1024 * 1024  # a request body read here to find its session hash
NOT_LOGGED_IN = "not logged in: log in first"
NOT_YOURS = "this page session belongs to another user"


async def _read_body(receive: Receive) -> bytes | None:
    """The whole request body; None when the client went away or it is over MAX_BODY_BYTES."""
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return None
        body = message.get("body", b"")
        size += len(body)
        if size > MAX_BODY_BYTES:
            return None
        chunks.append(body)
        if not message.get("more_body"):
            return b"".join(chunks)


def _replay(body: bytes, receive: Receive) -> Receive:
    """A receive that gives the body already read, then hands over to the client's."""
    sent = False

    async def again() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return again


def _session_hash_of(body: bytes) -> str | None:
    try:
        value = json.loads(body).get("session_hash")
    except (ValueError, AttributeError, UnicodeDecodeError):
        return None
    return value if isinstance(value, str) and value else None


def _refuse(status: int, error: str) -> JSONResponse:
    return JSONResponse({"error": error}, status_code=status)


class SessionGuard:
    def __init__(self, app: ASGIApp, svc: Services) -> None:
        self.app = app
        self.svc = svc

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        self._adopt(scope.get("app"))
        method, path = scope.get("method", ""), self._path(scope)
        if method == "POST" and path in ("/login", "/login/"):
            client = scope.get("client")
            token = CLIENT_ADDRESS.set(str(client[0]) if client else None)
            try:
                await self.app(scope, receive, send)
            finally:
                CLIENT_ADDRESS.reset(token)
            return
        if method == "GET" and path in ("/logout", "/logout/"):
            await self._logout(scope)
        elif method == "POST" and path in (f"{API}/cancel", f"{API}/cancel/"):
            await self._cancel(scope, receive, send)
            return
        elif method == "POST" and (path.rstrip("/") in (f"{API}/queue/join", f"{API}/component_server")
                                   or path.startswith((f"{API}/run/", f"{API}/api/"))):
            await self._join(scope, receive, send)
            return
        elif method == "POST" and path.startswith(f"{API}/stream/"):
            refusal = await self._owner_check(scope, self._event_session(scope, path), logged_in=True)
            if refusal is not None:
                await refusal(scope, receive, send)
                return
        elif method == "GET" and (path in (f"{API}/queue/data", f"{API}/deep_link")
                                  or path.startswith((f"{API}/heartbeat/", f"{API}/stream/"))):
            if path in (f"{API}/queue/data", f"{API}/deep_link"):
                values = parse_qs(scope.get("query_string", b"").decode("latin-1")).get("session_hash") or [""]
                session_hash = values[0]
            else:
                session_hash = path.split("/")[3]  # /gradio_api/heartbeat/{hash}, /gradio_api/stream/{hash}/...
            refusal = await self._owner_check(scope, session_hash, logged_in=True)
            if refusal is not None:
                await refusal(scope, receive, send)
                return
        await self.app(scope, receive, send)

    @staticmethod
    def _event_session(scope: Scope, path: str) -> str | None:
        """The page session of the event in /gradio_api/stream/{event id}[/close], from Gradio's
        queue (None when the queue no longer holds the event: Gradio answers 404 then)."""
        event_id = path.split("/")[3]
        try:
            event = scope["app"].get_blocks()._queue.event_ids_to_events.get(event_id)
        except Exception:  # noqa: BLE001 - no app or queue: nothing of a page session to protect
            return None
        value = getattr(event, "session_hash", None)
        return value if isinstance(value, str) else None

    @staticmethod
    def _path(scope: Scope) -> str:
        path, root = scope.get("path", ""), scope.get("root_path") or ""
        return path[len(root):] if root and path.startswith(root) else path

    def _adopt(self, server: Any) -> None:
        """Gradio's App keeps tokens in a dict and makes up a cookie id per process: use ours."""
        if server is None or not hasattr(server, "tokens"):
            return
        sessions = self.svc.sessions
        if server.tokens is not sessions:
            server.tokens = sessions
            server.cookie_id = sessions.cookie_id

    async def _user(self, scope: Scope) -> str | None:
        token = self.svc.sessions.token_of(Request(scope).cookies)
        if token is None:
            return None
        return await asyncio.to_thread(self.svc.sessions.user, token)

    async def _owner_check(self, scope: Scope, session_hash: str | None, *, logged_in: bool) -> JSONResponse | None:
        """None to let the request through, else the refusal. The first logged-in user to use a
        hash owns it; logged_in: refuse a request with no logged-in user (401)."""
        user = await self._user(scope)
        if user is None:
            return _refuse(401, NOT_LOGGED_IN) if logged_in else None
        if session_hash and self.svc.owners.claim(session_hash, user) != user:
            log.warning("refused %s %s: session hash of another user (requester %s)", scope.get("method"),
                        scope.get("path"), user)
            return _refuse(403, NOT_YOURS)
        return None

    async def _join(self, scope: Scope, receive: Receive, send: Send) -> None:
        body = await _read_body(receive)
        if body is None:
            await _refuse(413, f"request body missing or over {MAX_BODY_BYTES} bytes")(scope, receive, send)
            return
        # not logged in: Gradio's own check answers 401
        refusal = await self._owner_check(scope, _session_hash_of(body), logged_in=False)
        if refusal is not None:
            await refusal(scope, receive, send)
            return
        await self.app(scope, _replay(body, receive), send)

    async def _cancel(self, scope: Scope, receive: Receive, send: Send) -> None:
        body = await _read_body(receive)
        user = await self._user(scope)
        if user is None:
            await _refuse(401, NOT_LOGGED_IN)(scope, receive, send)
            return
        session_hash = _session_hash_of(body) if body is not None else None
        if session_hash is None or self.svc.owners.owner(session_hash) != user:
            log.warning("refused a cancel by %s: not the owner of the page session", user)
            await _refuse(403, NOT_YOURS)(scope, receive, send)
            return
        assert body is not None
        await self.app(scope, _replay(body, receive), send)

    async def _logout(self, scope: Scope) -> None:
        token = self.svc.sessions.token_of(Request(scope).cookies)
        if token is None:
            return
        values = parse_qs(scope.get("query_string", b"").decode("latin-1")).get("all_session") or ["true"]
        everywhere = values[0].lower() not in ("false", "0", "no")
        try:
            await asyncio.to_thread(self.svc.sessions.logout, token, everywhere=everywhere)
        except Exception:  # noqa: BLE001 - Gradio still clears the cookies; the reason goes to the log
            log.exception("could not end the login session")
