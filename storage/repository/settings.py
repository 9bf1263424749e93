"""Admin settings: a few named switches kept in the settings table, read by the rules they steer.

Part of storage.repository (see its docstring for the glossary); Session first, never commits.
SETTINGS names every key with its type, default and a sentence for people; a key without a row
has its default. Changing one needs the "settings.manage" permission (admins) and is audited as
setting.change with the old and new value.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from sqlalchemy.orm import Session

from storage import validate
from storage.audit import append_event
from storage.errors import ValidationError
from storage.models import Setting, utcnow
from storage.repository.roles import ActorRef, _who, require


@dataclass(frozen=True)
class SettingSpec:
    type: type
    default: Any
    label: str


ALLOW_SELF_REVIEW = "allow_self_review"
DEFAULT_MODEL = "default_model"
MAX_TEXT_SETTING = 200  # characters of a text setting (a model id is "<name>@<12 hex>")
SETTINGS: dict[str, SettingSpec] = {
    ALLOW_SELF_REVIEW: SettingSpec(bool, False, "Reviewers may review drafts they wrote or edited"),
    DEFAULT_MODEL: SettingSpec(str, "", "The model version new drafts use (empty: the one the app was started with)"),
}


def _spec(key: str) -> SettingSpec:
    spec = SETTINGS.get(key) if isinstance(key, str) else None
    if spec is None:
        raise ValidationError(f"unknown setting {key!r}: choose one of {', '.join(SETTINGS)}")
    return spec


def _check(key: str, spec: SettingSpec, value: Any) -> Any:
    # bool is a subclass of int: compare the type exactly, so True is no number and 1 no switch
    if type(value) is not spec.type:
        raise ValidationError(f"setting {key!r} must be {spec.type.__name__}, got {value!r}")
    if isinstance(value, str):
        validate.text(value, f"setting {key!r}", max_chars=MAX_TEXT_SETTING, allow_empty=True)
    return value


def get_setting(session: Session, key: str) -> Any:
    """The stored value of `key`, or its default when none was stored."""
    spec = _spec(key)
    row = session.get(Setting, key)
    if row is None:
        return spec.default
    value = json.loads(row.value)
    return value if type(value) is spec.type else spec.default


def set_setting(session: Session, key: str, value: Any, *, actor: ActorRef, reason: str | None = None) -> Any:
    """Store `value` for `key` (admins only); returns it. A value equal to the current one is refused."""
    by = require(session, actor, "settings.manage")
    assert by is not None
    spec = _spec(key)
    _check(key, spec, value)
    reason = validate.reason(reason, required=False)
    old = get_setting(session, key)
    if old == value:
        raise ValidationError(f"setting {key!r} is already {json.dumps(value)}")
    row = session.get(Setting, key)
    text = json.dumps(value)
    if row is None:
        row = Setting(key=key, value=text)
        session.add(row)
    row.value, row.updated_by_id, row.updated_at = text, by.id, utcnow()
    session.flush()
    append_event(session, *_who(by), "setting.change", "setting", key, old={key: old}, new={key: value},
                 reason=reason)
    return value


def record_setting_refusal(session: Session, key: str, value: Any, *, actor: ActorRef, reason: str) -> None:
    """Audit a change of `key` to `value` that a rule outside storage refused (e.g. promoting a
    model that failed its forgetting check): a setting.refused event with the rule's message as
    reason. Nothing is stored; the caller commits it in a transaction of its own."""
    by = require(session, actor, "settings.manage")
    assert by is not None
    _check(key, _spec(key), value)
    append_event(session, *_who(by), "setting.refused", "setting", key, new={key: value},
                 reason=validate.reason(reason, required=True))
