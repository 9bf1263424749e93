"""Who may do what: the permission table and the check every write makes first.

Part of storage.repository (see its docstring for the glossary); Session first, never commits.
"""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from storage.errors import NotFound, PermissionDenied
from storage.models import ROLES, User
from storage.validate import SYSTEM_ACTOR


ActorRef = User | str


_DRAFTING = frozenset({"document.create", "document.update", "run.create", "run.step", "run.status"})
PERMISSIONS: dict[str, frozenset[str]] = {
    "operator": _DRAFTING,
    "reviewer": _DRAFTING | {"pin", "edit", "review"},
    "manager": frozenset({"template.create", "audit.read", "export", "feedback.read"}),
    "admin": _DRAFTING | {"pin", "edit", "review", "template.create", "audit.read", "export", "feedback.read",
                          "user.manage", "settings.manage"},
}
if set(PERMISSIONS) != set(ROLES):  # one list of roles: storage.models.ROLES
    raise RuntimeError(f"PERMISSIONS covers {sorted(PERMISSIONS)}, storage.models.ROLES is {sorted(ROLES)}")
_SYSTEM_PERMISSIONS = frozenset({"user.manage", "template.create", "audit.read", "feedback.read"})
_WHAT = {
    "document.create": "create documents", "document.update": "change documents", "run.create": "start runs",
    "run.step": "record steps", "run.status": "pause, finish or discard runs", "pin": "pin tokens",
    "edit": "edit drafts", "review": "approve or reject drafts", "template.create": "create templates",
    "audit.read": "read the audit trail", "export": "export the audit trail", "feedback.read": "read QA feedback",
    "user.manage": "manage users", "settings.manage": "change settings",
}


def can(role: str, permission: str) -> bool:
    """Whether `role` has `permission` (see PERMISSIONS)."""
    if role == SYSTEM_ACTOR:
        return permission in _SYSTEM_PERMISSIONS
    return permission in PERMISSIONS.get(role, frozenset())


def require(session: Session, actor: ActorRef, permission: str) -> User | None:
    """The acting user (None for "system"), or NotFound / PermissionDenied with a clear message."""
    name = actor.name if isinstance(actor, User) else actor
    if name == SYSTEM_ACTOR:
        if not can(SYSTEM_ACTOR, permission):
            raise PermissionDenied(f"the system actor may not {_WHAT.get(permission, permission)}: act as a user")
        return None
    user = session.scalar(select(User).where(User.name == name))
    if user is None:
        raise NotFound(f"unknown user {name!r}")
    if user.disabled:
        raise PermissionDenied(f"user {name!r} is disabled")
    if not can(user.role, permission):
        roles = [r for r in ROLES if can(r, permission)]
        raise PermissionDenied(
            f"{name} is a {user.role} and may not {_WHAT.get(permission, permission)} (needs role {' or '.join(roles)})"
        )
    return user


def _who(user: User | None) -> tuple[str, str]:
    return (user.name, user.role) if user is not None else (SYSTEM_ACTOR, SYSTEM_ACTOR)
