"""Input checks shared by repository, audit and the CLIs. Each raises ValidationError with a
message that says what was wrong and what is allowed."""

from __future__ import annotations

import os
import re
import unicodedata
from pathlib import Path

from storage.errors import ValidationError
from storage.models import ROLES

MAX_REASON_CHARS = 2_000
MAX_NAME_CHARS = 64
MAX_TITLE_CHARS = 200
MAX_TEMPLATE_CHARS = 100_000
MAX_DOCUMENT_CHARS = 1_000_000
MAX_EDIT_CHARS = 20_000
MIN_PASSWORD_CHARS = 12
MAX_PASSWORD_CHARS = 256
PASSWORD_RULES = (f"at least {MIN_PASSWORD_CHARS} characters, at most {MAX_PASSWORD_CHARS}, not only spaces, "
                  "and not the user name")
MAX_ROW_ID = 2**63 - 1  # the largest id an SQL BIGINT (and SQLite's INTEGER) holds
NAME_MAX_BYTES = 255  # Linux's limit on one part of a path, in bytes
PATH_MAX_BYTES = 4095  # and on a whole path
SYSTEM_ACTOR = "system"  # the identity of CLIs and start-up code; never a login

_USER_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.@-]*$")
_IDENT = re.compile(r"^[a-z][a-z0-9_.]*$")
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")  # all C0 controls except \t \n \r


def unpaired_surrogate(value: str) -> str | None:
    """The first unpaired surrogate (U+D800..U+DFFF) in `value`, which neither the database nor the
    audit hash can encode; None when there is none."""
    return next((c for c in value if 0xD800 <= ord(c) <= 0xDFFF), None)


def _no_surrogate(value: str, what: str) -> None:
    bad = unpaired_surrogate(value)
    if bad is not None:
        raise ValidationError(f"{what} holds an unpaired surrogate (U+{ord(bad):04X}), which is not a character")


def _visible(value: str) -> bool:
    """Whether any character would show: not only format characters (zero-width spaces,
    direction marks such as U+200B, U+202E) and whitespace."""
    return any(not c.isspace() and unicodedata.category(c) != "Cf" for c in value)


def reason(value: str | None, *, required: bool, what: str = "reason") -> str | None:
    """None (when not required) or a non-blank string of at most MAX_REASON_CHARS."""
    if value is None:
        if required:
            raise ValidationError(f"a {what} is required")
        return None
    if not isinstance(value, str):
        raise ValidationError(f"the {what} must be text")
    stripped = value.strip()
    if not stripped or not _visible(stripped):
        raise ValidationError(f"the {what} is empty or invisible: say why in words (or leave it out where it is "
                              "optional)")
    if len(stripped) > MAX_REASON_CHARS:
        raise ValidationError(f"the {what} is {len(stripped)} characters long; at most {MAX_REASON_CHARS} are allowed")
    _no_surrogate(stripped, f"the {what}")
    if _CONTROL.search(stripped):
        raise ValidationError(f"the {what} contains control characters")
    return stripped


def user_name(value: str) -> str:
    if not isinstance(value, str) or not value:
        raise ValidationError("a user name is required")
    if len(value) > MAX_NAME_CHARS:
        raise ValidationError(f"user name is {len(value)} characters long; at most {MAX_NAME_CHARS} are allowed")
    if not _USER_NAME.match(value):
        raise ValidationError(
            f"user name {value!r} may hold only letters, digits and _ . @ - (starting with a letter or digit)"
        )
    if value == SYSTEM_ACTOR:
        raise ValidationError(f"{SYSTEM_ACTOR!r} is reserved for the application itself")
    return value


def actor_name(value: str) -> str:
    """A user name, or SYSTEM_ACTOR (who CLIs and start-up code act as): what an audit event's
    actor may be, e.g. in a filter of the trail."""
    return value if value == SYSTEM_ACTOR else user_name(value)


def row_id(value: object, what: str) -> int:
    """A database id: a whole number from 1 to MAX_ROW_ID (ids start at 1, so 0 and negatives
    name nothing)."""
    if not isinstance(value, int) or isinstance(value, bool):
        raise ValidationError(f"{what} must be a whole number")
    if not 1 <= value <= MAX_ROW_ID:
        raise ValidationError(f"{what} must be between 1 and {MAX_ROW_ID}, got {value}")
    return value


def visible_name(value: str, what: str, max_chars: int = MAX_TITLE_CHARS) -> str:
    """A name typed by a person (a template's, a title): text of at most max_chars with at least
    one visible character and no control characters."""
    text(value, what, max_chars=max_chars)
    if not _visible(value):
        raise ValidationError(f"{what} is only spaces or invisible characters")
    if _CONTROL.search(value) or any(c in value for c in "\n\r\t"):
        raise ValidationError(f"{what} contains control characters")
    return value


def output_path(value: str | os.PathLike[str], what: str = "the output path") -> Path:
    """A file to write: not empty, valid text without NUL, each part at most NAME_MAX_BYTES and the
    whole at most PATH_MAX_BYTES in UTF-8, inside an existing folder this process may write in."""
    raw = os.fspath(value)
    if not isinstance(raw, str) or not raw.strip():
        raise ValidationError(f"{what} is empty: name a file")
    if "\x00" in raw:
        raise ValidationError(f"{what} contains a NUL character")
    _no_surrogate(raw, what)
    size = len(raw.encode("utf-8"))
    if size > PATH_MAX_BYTES:
        raise ValidationError(f"{what} is {size:,} bytes long; at most {PATH_MAX_BYTES:,} are allowed")
    longest = max(len(part.encode("utf-8")) for part in raw.split("/"))
    if longest > NAME_MAX_BYTES:
        raise ValidationError(f"a part of {what} is {longest:,} bytes long; at most {NAME_MAX_BYTES} are allowed")
    path = Path(raw).expanduser()
    if path.name in ("", ".", ".."):
        raise ValidationError(f"{what} names a folder, not a file")
    if path.is_dir():
        raise ValidationError(f"{what} {raw!r} is a folder, not a file")
    if path.exists() and not path.is_file():  # a device such as /dev/null would be replaced by the export
        raise ValidationError(f"{what} {raw!r} exists and is not a regular file")
    if not path.parent.is_dir():
        raise ValidationError(f"the folder {str(path.parent)!r} does not exist")
    if not os.access(path.parent, os.W_OK | os.X_OK):
        raise ValidationError(f"cannot write in the folder {str(path.parent)!r}")
    return path


def role(value: str) -> str:
    if value not in ROLES:
        raise ValidationError(f"unknown role {value!r}: choose one of {', '.join(ROLES)}")
    return value


def ident(value: str, what: str, max_chars: int = 64) -> str:
    """Lower-case identifiers such as audit actions ('document.update') and object types."""
    if not isinstance(value, str) or not _IDENT.match(value) or len(value) > max_chars:
        raise ValidationError(
            f"{what} {value!r} must be lower-case letters, digits, '_' and '.' (at most {max_chars})"
        )
    return value


def text(value: str, what: str, *, max_chars: int, allow_empty: bool = False) -> str:
    if not isinstance(value, str):
        raise ValidationError(f"{what} must be text")
    if not allow_empty and not value.strip():
        raise ValidationError(f"{what} is empty")
    if len(value) > max_chars:
        raise ValidationError(f"{what} is {len(value)} characters long; at most {max_chars} are allowed")
    if "\x00" in value:
        raise ValidationError(f"{what} contains a NUL character")
    _no_surrogate(value, what)
    return value


def password(value: str, name: str | None = None) -> str:
    """A password that keeps the rules (PASSWORD_RULES); `name` is the user it is for, when known."""
    if not isinstance(value, str):
        raise ValidationError("the password must be text")
    if len(value) < MIN_PASSWORD_CHARS:
        raise ValidationError(f"the password is {len(value)} characters long; at least {MIN_PASSWORD_CHARS} "
                              "are needed")
    if len(value) > MAX_PASSWORD_CHARS:
        raise ValidationError(f"the password is {len(value)} characters long; at most {MAX_PASSWORD_CHARS} "
                              "are allowed")
    if not value.strip():
        raise ValidationError("the password is only spaces: use letters, digits or other characters too")
    if name is not None and value.strip().casefold() == name.casefold():
        raise ValidationError("the password must not be the user name")
    return value


def span(start: int, end: int, length: int, what: str, *, allow_empty: bool) -> None:
    """0 <= start <= end <= length (start < end unless allow_empty)."""
    if not isinstance(start, int) or not isinstance(end, int) or isinstance(start, bool) or isinstance(end, bool):
        raise ValidationError(f"{what} positions must be whole numbers")
    if start < 0 or end > length or start > end or (not allow_empty and start == end):
        raise ValidationError(
            f"{what} [{start}, {end}) lies outside the document (valid positions are 0 to {length})"
            if (start < 0 or end > length) else f"{what} [{start}, {end}) is empty or reversed"
        )
