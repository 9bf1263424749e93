"""The Password tab's handler: every logged-in user changes their own password here (the old one,
then the new one twice). It is the one screen open while a user must choose a new password (the
first-run admin; users whose password an admin set).

Audit events
  a change -> user.password_change (never a password); a wrong old password ->
  password_change.failed, and it counts towards the account's lock like a failed login
"""

from __future__ import annotations

from dataclasses import dataclass

from app.auth import actor_for, check_own_password
from app.common import Refused, safe
from app.services import Services
from storage import repository as repo
from storage import validate
from storage.audit import append_event
from storage.db import transaction

PASSWORD_RULES = validate.PASSWORD_RULES


@dataclass
class AccountUpdate:
    message: str = ""
    kind: str = "info"
    changed: bool = False  # the password was changed: the page shows the screens again


def _account_error(message: str) -> AccountUpdate:
    return AccountUpdate(message=message, kind="error")


def must_change(svc: Services, username: str | None) -> bool:
    """Whether the logged-in user must choose a new password before any other screen opens."""
    if not username:
        return False
    with svc.reader() as s:
        user = repo.find_user(s, username)
        return bool(user is not None and not user.disabled and user.must_change_password)


@safe(_account_error)
def change_password(svc: Services, username: str | None, old: object, new: object, again: object, *,
                    keep_token: str | None = None) -> AccountUpdate:
    """Set the user's own password after checking the old one; their other login sessions end
    (keep_token: the session of the page that asked, which stays logged in)."""
    actor = actor_for(svc, username, password_change=True)
    if not isinstance(new, str) or not isinstance(again, str) or not new:
        raise Refused(f"type the new password twice ({PASSWORD_RULES})")
    if new != again:
        raise Refused("the two new passwords differ: type the same one twice")
    validate.password(new, actor.name)
    ok, locked = check_own_password(svc, actor.name, old)
    if not ok:
        with transaction(svc.factory) as s:
            append_event(s, actor.name, actor.role, "password_change.failed", "user", actor.name)
        raise Refused(locked or "the old password is not right: nothing was changed")
    with transaction(svc.factory) as s:
        repo.set_password(s, actor.name, new, actor=actor.name, keep_token=keep_token)
    return AccountUpdate(message="your password is changed; your other sessions are logged out", kind="ok",
                         changed=True)
