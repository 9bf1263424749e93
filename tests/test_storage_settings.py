"""storage.repository.settings: admin switches with defaults, changed by admins only and audited."""

from __future__ import annotations

import json

import pytest
import storage_fixtures as sf
from sqlalchemy import func, select

from storage import repository as repo
from storage.audit import verify_chain
from storage.db import transaction
from storage.errors import PermissionDenied, ValidationError
from storage.models import AuditEvent, Setting

KEY = repo.ALLOW_SELF_REVIEW


def _counts(factory) -> tuple[int, int]:
    with sf.reader(factory)() as s:
        return (s.scalar(select(func.count()).select_from(Setting)),
                s.scalar(select(func.count()).select_from(AuditEvent)))


def test_a_setting_has_its_default_until_an_admin_changes_it(factory):
    with sf.reader(factory)() as s:
        assert repo.get_setting(s, KEY) is False
    with transaction(factory) as s:
        assert repo.set_setting(s, KEY, True, actor="adam", reason="one reviewer on the night shift") is True
    with sf.reader(factory)() as s:
        assert repo.get_setting(s, KEY) is True
        row = s.get(Setting, KEY)
        assert row.updated_by_id == repo.get_user(s, "adam").id and row.updated_at is not None
    with transaction(factory) as s:
        repo.set_setting(s, KEY, False, actor="adam")
    with sf.reader(factory)() as s:
        assert repo.get_setting(s, KEY) is False
        events = list(s.scalars(select(AuditEvent).where(AuditEvent.action == "setting.change")
                                .order_by(AuditEvent.seq)))
        assert [(e.actor, e.object_type, e.object_id, json.loads(e.old_value), json.loads(e.new_value))
                for e in events] == [("adam", "setting", KEY, {KEY: False}, {KEY: True}),
                                     ("adam", "setting", KEY, {KEY: True}, {KEY: False})]
        assert events[0].reason == "one reviewer on the night shift"
        assert verify_chain(s).ok


@pytest.mark.parametrize("actor, words", [("alice", "alice is a reviewer and may not change settings"),
                                          ("maya", "maya is a manager and may not change settings"),
                                          ("olga", "may not change settings"),
                                          ("system", "system actor may not change settings")])
def test_only_admins_change_settings(factory, actor, words):
    before = _counts(factory)
    with pytest.raises(PermissionDenied, match=words), transaction(factory) as s:
        repo.set_setting(s, KEY, True, actor=actor)
    assert _counts(factory) == before
    with sf.reader(factory)() as s:
        assert repo.get_setting(s, KEY) is False


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)  # pure input checks: PostgreSQL adds nothing
@pytest.mark.parametrize("key, value, words", [("colour", True, "unknown setting 'colour': choose one of"),
                                               (KEY, "yes", "must be bool"),
                                               (KEY, 1, "must be bool"),
                                               (KEY, None, "must be bool"),
                                               (KEY, False, "already false")])
def test_bad_setting_changes_are_refused(factory, key, value, words):
    before = _counts(factory)
    with pytest.raises(ValidationError, match=words), transaction(factory) as s:
        repo.set_setting(s, key, value, actor="adam")
    assert _counts(factory) == before
    with sf.reader(factory)() as s, pytest.raises(ValidationError, match="unknown setting"):
        repo.get_setting(s, "colour")
