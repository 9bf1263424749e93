"""What every screen's handlers share: refusals, the message a person sees for an error, the
parsing of numbers typed into the page, and who is logged in (the page header).

Every handler takes the Services and the logged-in user's name first, checks the role on the
server (app.auth) before anything else, and returns a result carrying a message instead of
raising: refusals (wrong role, a pin outside the draft, an edit over a pin, a stale review, a
locked database) come back as the storage / engine message; anything unexpected is logged with
its traceback on the server and the page only gets a short message with a reference.
"""

from __future__ import annotations

import functools
import logging
import secrets
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar

from app.auth import SCREENS, AccessDenied, actor_for
from engine.sampler import ConstraintError
from engine.template import TemplateError
from storage.errors import StorageError
from storage.validate import unpaired_surrogate

if TYPE_CHECKING:  # app.services builds the run registry (app.runs), which uses this module
    from app.services import Services

log = logging.getLogger(__name__)
T = TypeVar("T")


class Refused(Exception):
    """Bad input from the page; the message says what is allowed."""


# errors whose message is meant for the person at the page
USER_ERRORS: tuple[type[BaseException], ...] = (AccessDenied, StorageError, ConstraintError, TemplateError, Refused)


def explain(exc: BaseException) -> str:
    """The message a person sees for an exception; unexpected ones are logged with a reference."""
    if isinstance(exc, USER_ERRORS):
        return str(exc)
    ref = secrets.token_hex(4)
    log.error("unexpected error (reference %s)", ref, exc_info=exc)
    return f"Something went wrong on the server (reference {ref}); nothing more was changed. Try again."


def safe(on_error: Callable[[str], T]) -> Callable[[Callable[..., T]], Callable[..., T]]:
    """Wrap a handler: exceptions become on_error(message)."""

    def wrap(fn: Callable[..., T]) -> Callable[..., T]:
        @functools.wraps(fn)
        def inner(*args: Any, **kwargs: Any) -> T:
            try:
                return fn(*args, **kwargs)
            except Exception as exc:  # noqa: BLE001 - the page gets a message, the log the traceback
                return on_error(explain(exc))

        return inner

    return wrap


def as_int(value: Any, what: str, lo: int, hi: int) -> int:
    """A whole number typed into the page, in [lo, hi]; Refused otherwise."""
    try:
        f = float(value)
    except (TypeError, ValueError):
        raise Refused(f"{what} must be a whole number") from None
    if f != f or f != int(f):
        raise Refused(f"{what} must be a whole number, got {value!r}")
    n = int(f)
    if not lo <= n <= hi:
        raise Refused(f"{what} must be between {lo} and {hi}, got {n}")
    return n


def as_float(value: Any, what: str, lo: float, hi: float) -> float:
    """A number typed into the page, in [lo, hi]; Refused otherwise."""
    try:
        f = float(value)
    except (TypeError, ValueError):
        raise Refused(f"{what} must be a number") from None
    if not (lo <= f <= hi):
        raise Refused(f"{what} must be between {lo:g} and {hi:g}, got {value!r}")
    return f


def as_text(value: Any, what: str, max_chars: int, *, strip: bool = True) -> str:
    """Text typed into the page: at most max_chars characters, valid Unicode (no unpaired
    surrogate, no NUL); None is "". Refused with the limit or the fault otherwise."""
    if value is None:
        return ""
    if not isinstance(value, str):
        raise Refused(f"{what} must be text")
    bad = unpaired_surrogate(value)
    if bad is not None:
        raise Refused(f"{what} holds an unpaired surrogate (U+{ord(bad):04X}), which is not a character: "
                      "retype or paste it again")
    if "\x00" in value:
        raise Refused(f"{what} holds a NUL character")
    n = len(value.strip() if strip else value)
    if n > max_chars:
        raise Refused(f"{what} is {n:,} characters long; at most {max_chars:,} are allowed")
    return value


def storable(text: str) -> str:
    """Model text as the database may hold it (a document's text, a pin's text): a NUL, which no
    database text column takes, becomes U+FFFD."""
    return text.replace("\x00", "\ufffd")


def short(value: str | None, n: int = 120) -> str:
    """A stored value cut to n characters for a table cell."""
    if not value:
        return ""
    return value if len(value) <= n else value[: n - 1] + "…"


def whoami(svc: Services, username: str | None) -> tuple[str, list[str], bool]:
    """(a line for the page header, the screens this user may open, whether they must choose a new
    password first: then no screen opens but the Password tab)."""
    try:
        actor = actor_for(svc, username, password_change=True)
        if actor.must_change_password:
            return f"{actor.name} · {actor.role} · must choose a new password", [], True
        return f"{actor.name} · {actor.role}", [k for k, roles in SCREENS.items() if actor.role in roles], False
    except Exception as exc:  # noqa: BLE001
        return explain(exc), [], False
