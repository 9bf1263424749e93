"""The admin screen's handlers: the users, adding one, changing a role, disabling and enabling,
setting a password, unlocking an account locked by failed logins (each an audit event written by
storage, with the reason given), the review setting (whether reviewers may review drafts they
wrote or edited; audited as setting.change), and the model versions: which one new drafts use,
changed by promoting another (audited as setting.change of default_model; a fine-tune that failed
its forgetting check is refused, see app.models).

A password the admin types (a new user's, or a reset) is known to the admin: the user must choose
a new one at first login (no screen opens before), and a reset ends the user's sessions."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from app.auth import require_permission, require_screen
from app.common import Refused, safe
from app.services import Services
from storage import repository as repo
from storage import validate
from storage.db import transaction
from storage.models import ROLES

NAME_RULES = f"letters, digits and _ . @ - (first a letter or digit); at most {validate.MAX_NAME_CHARS} characters"
PASSWORD_RULES = validate.PASSWORD_RULES
USER_HEADERS = ["user", "role", "state", "failed logins", "last login (UTC)", "created (UTC)"]
SELF_REVIEW_LABEL = repo.SETTINGS[repo.ALLOW_SELF_REVIEW].label
_SELF_REVIEW_WORDS = {True: "may review drafts they wrote or edited",
                      False: "may not review drafts they wrote or edited"}


VERSION_HEADERS = ["version", "model id", "parent", "test bound vs parent", "may be promoted", "default"]


@dataclass
class AdminUpdate:
    message: str = ""
    kind: str = "info"
    rows: list[list[Any]] | None = None
    allow_self_review: bool | None = None  # the stored setting, for the checkbox
    versions: list[list[Any]] | None = None  # VERSION_HEADERS
    version_ids: list[str] | None = None  # the model ids, for the promote dropdown


def _admin_error(message: str) -> AdminUpdate:
    return AdminUpdate(message=message, kind="error")


def _state(disabled: bool, locked_until: Any, must_change: bool) -> str:
    words = ["disabled" if disabled else "active"]
    if locked_until is not None:
        words.append(f"locked until {locked_until.strftime('%H:%M')} UTC")
    if must_change:
        words.append("must change password")
    return ", ".join(words)


def _user_rows(svc: Services) -> list[list[Any]]:
    with transaction(svc.factory) as s:  # the throttle's secret is made on first use
        users = repo.list_users(s)
        locks = repo.user_locks(s, [u.name for u in users])
        return [[u.name, u.role, _state(u.disabled, locks.get(u.name), u.must_change_password), u.failed_logins,
                 u.last_login_at.strftime("%Y-%m-%d %H:%M") if u.last_login_at else "",
                 u.created_at.strftime("%Y-%m-%d %H:%M")] for u in users]


def _self_review(svc: Services) -> bool:
    with svc.reader() as s:
        return bool(repo.get_setting(s, repo.ALLOW_SELF_REVIEW))


def _versions(svc: Services) -> tuple[list[list[Any]], list[str]]:
    vs = svc.models.versions()
    rows = [[v.version, v.model_id, v.parent or "", "" if v.test_change is None else f"{100 * v.test_change:+.2f} %",
             "yes" if v.refusal is None else f"no: {v.refusal}", "default" if v.model_id == svc.model_id else ""]
            for v in vs]
    return rows, [v.model_id for v in vs]


@safe(_admin_error)
def list_users(svc: Services, username: str | None) -> AdminUpdate:
    require_screen(svc, username, "admin")
    rows = _user_rows(svc)
    versions, ids = _versions(svc)
    return AdminUpdate(message=f"{len(rows)} user(s)", rows=rows, allow_self_review=_self_review(svc),
                       versions=versions, version_ids=ids)


@safe(_admin_error)
def promote(svc: Services, username: str | None, model_id: Any, reason: str = "") -> AdminUpdate:
    """Make a model version the default for new drafts (admins only; audited as setting.change).
    Runs already started keep the model they recorded."""
    actor = require_permission(svc, username, "settings.manage", "change settings")
    if not isinstance(model_id, str) or not model_id.strip():
        raise Refused("choose a model version to promote")
    version = svc.models.find(model_id.strip())
    if version is None:
        raise Refused(f"no model version {model_id!r} in {svc.model_dir} or {svc.models_dir}")
    if version.model_id == svc.model_id:
        return AdminUpdate(message=f"nothing to change: {version.version} is already the default")
    if version.refusal is not None:  # audited in a transaction of its own, then shown
        with transaction(svc.factory) as s:
            repo.record_setting_refusal(s, repo.DEFAULT_MODEL, version.model_id, actor=actor.name,
                                        reason=version.refusal)
        raise Refused(version.refusal)
    with transaction(svc.factory) as s:
        repo.set_setting(s, repo.DEFAULT_MODEL, version.model_id, actor=actor.name, reason=reason or None)
    svc.models.make_default(version.model_id)
    versions, ids = _versions(svc)
    return AdminUpdate(message=f"promoted {version.version} ({version.model_id}): new drafts use it", kind="ok",
                       versions=versions, version_ids=ids)


@safe(_admin_error)
def set_self_review(svc: Services, username: str | None, allow: Any) -> AdminUpdate:
    """Store whether reviewers may review drafts they wrote or edited (admins only)."""
    actor = require_permission(svc, username, "settings.manage", "change settings")
    if not isinstance(allow, bool):
        raise Refused("tick or clear the box, then save")
    if allow == _self_review(svc):
        return AdminUpdate(message=f"nothing to save: reviewers already {_SELF_REVIEW_WORDS[allow]}",
                           allow_self_review=allow)
    with transaction(svc.factory) as s:
        repo.set_setting(s, repo.ALLOW_SELF_REVIEW, allow, actor=actor.name)
    return AdminUpdate(message=f"saved: reviewers {_SELF_REVIEW_WORDS[allow]}", kind="ok",
                       allow_self_review=_self_review(svc))


def _name(value: Any) -> str:
    return value.strip() if isinstance(value, str) else ""


def _role(value: Any) -> str:
    """One of the listed roles; the page's dropdown offers no other, an API caller may send one."""
    if not isinstance(value, str) or value not in ROLES:
        raise Refused(f"unknown role {value!r}: choose one of {', '.join(ROLES)}")
    return value


@safe(_admin_error)
def add_user(svc: Services, username: str | None, name: str, role: str, password: str) -> AdminUpdate:
    """Add a user; storage refuses a name or password that breaks its rules (NAME_RULES, PASSWORD_RULES)."""
    actor = require_permission(svc, username, "user.manage", "manage users")
    name, role = _name(name), _role(role)
    with transaction(svc.factory) as s:
        repo.create_user(s, name, role, password if isinstance(password, str) else "", actor=actor.name,
                         must_change_password=True)
    return AdminUpdate(message=f"added {name} ({role})", kind="ok", rows=_user_rows(svc))


@safe(_admin_error)
def change_role(svc: Services, username: str | None, name: str, role: str, reason: str) -> AdminUpdate:
    actor = require_permission(svc, username, "user.manage", "manage users")
    name, role = _name(name), _role(role)
    with transaction(svc.factory) as s:
        repo.set_role(s, name, role, actor=actor.name, reason=reason)
    return AdminUpdate(message=f"{name} is now {role}", kind="ok", rows=_user_rows(svc))


@safe(_admin_error)
def set_enabled(svc: Services, username: str | None, name: str, enabled: bool, reason: str) -> AdminUpdate:
    actor = require_permission(svc, username, "user.manage", "manage users")
    change = repo.enable_user if enabled else repo.disable_user
    with transaction(svc.factory) as s:
        change(s, (name or "").strip(), actor=actor.name, reason=reason)
    return AdminUpdate(message=f"{name.strip()} {'enabled' if enabled else 'disabled'}", kind="ok",
                       rows=_user_rows(svc))


@safe(_admin_error)
def reset_password(svc: Services, username: str | None, name: str, password: str, reason: str) -> AdminUpdate:
    """Set another user's password (keeping PASSWORD_RULES): they must change it at next login and
    their sessions end. An admin changes their own password in the Password tab."""
    actor = require_permission(svc, username, "user.manage", "manage users")
    name = _name(name)
    if name == actor.name:
        raise Refused("change your own password in the Password tab (it asks for the old one)")
    with transaction(svc.factory) as s:
        repo.set_password(s, name, password if isinstance(password, str) else "", actor=actor.name,
                          reason=reason or None)
    return AdminUpdate(message=f"password of {name} set: they must choose a new one at next login, and their "
                       "sessions are logged out", kind="ok", rows=_user_rows(svc))


@safe(_admin_error)
def unlock(svc: Services, username: str | None, name: str, reason: str) -> AdminUpdate:
    """End the lock that failed logins put on a user (audited as user.unlock with the reason)."""
    actor = require_permission(svc, username, "user.manage", "manage users")
    name = _name(name)
    with transaction(svc.factory) as s:
        repo.unlock_user(s, name, actor=actor.name, reason=reason)
    return AdminUpdate(message=f"{name} unlocked", kind="ok", rows=_user_rows(svc))
