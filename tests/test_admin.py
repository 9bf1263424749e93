"""The Admin screen's handlers (app.admin) as plain functions: the review setting, and the rules
for the users an admin adds. The tiny model, a temporary database, the seeded users (olga
operator, alice / bob reviewers, maya manager, adam admin)."""

from __future__ import annotations

import json

import storage_fixtures as sf
from sqlalchemy import select

from app import admin, draft, review
from app.state import DraftState
from storage import repository as repo
from storage.models import AuditEvent


def _setting_events(svc) -> list[AuditEvent]:
    with svc.reader() as s:
        return list(s.scalars(select(AuditEvent).where(AuditEvent.action == "setting.change")
                              .order_by(AuditEvent.seq)))


def test_admin_screen_shows_and_saves_the_review_setting(app_services):
    svc = app_services
    assert admin.list_users(svc, "adam").allow_self_review is False
    saved = admin.set_self_review(svc, "adam", True)
    assert saved.kind == "ok" and saved.allow_self_review is True
    assert "may review drafts they wrote or edited" in saved.message
    assert admin.list_users(svc, "adam").allow_self_review is True
    same = admin.set_self_review(svc, "adam", True)
    assert same.kind == "info" and "nothing to save" in same.message
    (ev,) = _setting_events(svc)
    assert (ev.actor, json.loads(ev.old_value), json.loads(ev.new_value)) == (
        "adam", {repo.ALLOW_SELF_REVIEW: False}, {repo.ALLOW_SELF_REVIEW: True})
    # with the box ticked, a reviewer signs off their own accepted draft
    gen = draft.generate(svc, "alice", DraftState(), template="Shift handover", length=None, steps=3, seed=1,
                         temperature=1.0)
    st = list(gen)[-1].state
    assert draft.accept(svc, "alice", st).kind == "ok"
    opened = review.open_review(svc, "alice", st.document_id)
    assert review.sign_review(svc, "alice", opened.state, "approve", "", sf.PASSWORD).kind == "ok"
    assert admin.set_self_review(svc, "adam", False).allow_self_review is False
    assert len(_setting_events(svc)) == 2


def test_only_admins_change_the_review_setting(app_services):
    svc = app_services
    for user in ("alice", "maya", "olga", None):
        up = admin.set_self_review(svc, user, True)
        assert up.kind == "error" and up.allow_self_review is None, user
    assert "alice is a reviewer and may not change settings (needs role admin)" in \
        admin.set_self_review(svc, "alice", True).message
    assert "tick or clear" in admin.set_self_review(svc, "adam", "yes").message
    assert _setting_events(svc) == []
    with svc.reader() as s:
        assert repo.get_setting(s, repo.ALLOW_SELF_REVIEW) is False


def _users_and_events(svc) -> tuple[list[str], int]:
    with svc.reader() as s:
        return [u.name for u in repo.list_users(s)], len(list(s.scalars(select(AuditEvent.seq))))


def test_only_listed_roles_are_accepted(app_services):
    svc = app_services
    before = _users_and_events(svc)
    for role in ("wizard", "", None, "Admin", ["admin"]):
        up = admin.add_user(svc, "adam", "nina", role, "long enough password")
        assert up.kind == "error" and "choose one of operator, reviewer, manager, admin" in up.message, role
    assert "unknown role 'wizard'" in admin.change_role(svc, "adam", "olga", "wizard", "why").message
    assert _users_and_events(svc) == before
    assert admin.add_user(svc, "adam", "nina", "manager", "long enough password").message == "added nina (manager)"


def test_passwords_follow_the_rules_of_storage(app_services):
    svc = app_services
    before = _users_and_events(svc)
    for password, words in ((" " * 8, "8 characters long; at least 12"), (" " * 16, "only spaces"),
                            ("short pw", "at least 12"), ("x" * 257, "at most 256"),
                            ("Nina.Kowalska", "must not be the user name"), (None, "0 characters long")):
        up = admin.add_user(svc, "adam", "nina.kowalska", "operator", password)
        assert up.kind == "error" and words in up.message, (password, up.message)
    assert _users_and_events(svc) == before
    assert admin.add_user(svc, "adam", "nina.kowalska", "operator", "twelve chars").kind == "ok"


def test_long_user_names_are_refused_not_cut(app_services):
    svc = app_services
    before = _users_and_events(svc)
    up = admin.add_user(svc, "adam", "n" * 70, "operator", "long enough password")
    assert up.kind == "error" and "70 characters long; at most 64 are allowed" in up.message
    assert _users_and_events(svc) == before
    assert admin.add_user(svc, "adam", "n" * 64, "operator", "long enough password").kind == "ok"


def test_admin_form_states_the_rules_and_lists_only_roles(app_services):
    import gradio as gr

    from app.ui_admin import AdminTab
    from storage import validate
    from storage.models import ROLES

    with gr.Blocks():
        tab = AdminTab(app_services)
    assert tab.password.info == validate.PASSWORD_RULES and "at least 12 characters" in tab.password.info
    assert "at most 64 characters" in tab.name.info and tab.name.max_length is None  # refused, not cut
    assert tab.role.allow_custom_value is False and tab.role.filterable is False
    assert [c[0] for c in tab.role.choices] == list(ROLES)
