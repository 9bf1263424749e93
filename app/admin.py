"""The admin screen's handlers: the users, adding one, changing a role, disabling and enabling
(each an audit event written by storage, with the reason given)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from app.auth import require_permission, require_screen
from app.common import safe
from app.services import Services
from storage import repository as repo
from storage.db import transaction

USER_HEADERS = ["user", "role", "state", "failed logins", "last login (UTC)", "created (UTC)"]


@dataclass
class AdminUpdate:
    message: str = ""
    kind: str = "info"
    rows: list[list[Any]] | None = None


def _admin_error(message: str) -> AdminUpdate:
    return AdminUpdate(message=message, kind="error")


def _user_rows(svc: Services) -> list[list[Any]]:
    with svc.reader() as s:
        return [[u.name, u.role, "disabled" if u.disabled else "active", u.failed_logins,
                 u.last_login_at.strftime("%Y-%m-%d %H:%M") if u.last_login_at else "",
                 u.created_at.strftime("%Y-%m-%d %H:%M")] for u in repo.list_users(s)]


@safe(_admin_error)
def list_users(svc: Services, username: str | None) -> AdminUpdate:
    require_screen(svc, username, "admin")
    rows = _user_rows(svc)
    return AdminUpdate(message=f"{len(rows)} user(s)", rows=rows)


@safe(_admin_error)
def add_user(svc: Services, username: str | None, name: str, role: str, password: str) -> AdminUpdate:
    actor = require_permission(svc, username, "user.manage", "manage users")
    with transaction(svc.factory) as s:
        repo.create_user(s, (name or "").strip(), role, password or "", actor=actor.name)
    return AdminUpdate(message=f"added {name.strip()} ({role})", kind="ok", rows=_user_rows(svc))


@safe(_admin_error)
def change_role(svc: Services, username: str | None, name: str, role: str, reason: str) -> AdminUpdate:
    actor = require_permission(svc, username, "user.manage", "manage users")
    with transaction(svc.factory) as s:
        repo.set_role(s, (name or "").strip(), role, actor=actor.name, reason=reason)
    return AdminUpdate(message=f"{name.strip()} is now {role}", kind="ok", rows=_user_rows(svc))


@safe(_admin_error)
def set_enabled(svc: Services, username: str | None, name: str, enabled: bool, reason: str) -> AdminUpdate:
    actor = require_permission(svc, username, "user.manage", "manage users")
    change = repo.enable_user if enabled else repo.disable_user
    with transaction(svc.factory) as s:
        change(s, (name or "").strip(), actor=actor.name, reason=reason)
    return AdminUpdate(message=f"{name.strip()} {'enabled' if enabled else 'disabled'}", kind="ok",
                       rows=_user_rows(svc))
