"""The role matrix: every endpoint of the app (each api_name of the Gradio UI, the screens' private
events, and GET /exports/{token}) for every role and for nobody logged in.

EXPECTED is written out from the roles in ../shared/design/PRODUCT.md, not read from the code's
permission table, so a change to that table that lets a role do more (or less) fails here:
  operator  starts a draft, watches it, accepts / rejects / discards it, downloads it
  reviewer  the draft screen as well, and pins, edits, locks terms; approves or rejects reviews
  manager   reads, filters, charts, exports and verifies the audit trail; no drafting, no review
  admin     manages users, roles and settings, and may do what the others do
  nobody    (not logged in) nothing
An export link serves the manager who made it and admins only.

Each endpoint is called through its handler for every user; a refusal for the role is recognised
by app.auth's words ("is a ROLE and may not", "the SCREEN screen is for", "not logged in") and must
write nothing. A few calls go through the live HTTP app to prove the UI wires the same handlers.
"""

from __future__ import annotations

import itertools
import re
from pathlib import Path

import httpx
import pytest
import storage_fixtures as sf
from sqlalchemy import func, select

from app import account, admin, audit, draft, export_links, review, steering
from app.audit import AuditQuery
from app.state import DraftState, ReviewState
from storage.models import ROLES, AuditEvent

NOBODY = None
USERS = {"operator": "olga", "reviewer": "alice", "manager": "maya", "admin": "adam"}
DRAFTERS = {"operator", "reviewer", "admin"}
STEERERS = {"reviewer", "admin"}
REVIEWERS = {"reviewer", "admin"}
AUDITORS = {"manager", "admin"}
ADMINS = {"admin"}
EXPECTED: dict[str, set[str]] = {
    # the draft screen
    "generate": DRAFTERS, "resume": DRAFTERS, "pause": DRAFTERS, "set_pace": DRAFTERS, "view_step": DRAFTERS,
    "open_run": DRAFTERS, "accept": DRAFTERS, "reject": DRAFTERS, "discard": DRAFTERS, "download": DRAFTERS,
    # steering a draft
    "click_pin": STEERERS, "toggle_pin": STEERERS, "pin_span": STEERERS, "lock_term": STEERERS,
    "edit_span": STEERERS,
    # the review screen
    "review_queue": REVIEWERS, "open_review": REVIEWERS, "sign_review": REVIEWERS,
    # the audit screen
    "audit_table": AUDITORS, "feedback_charts": AUDITORS, "export": AUDITORS, "verify": AUDITORS,
    # the admin screen
    "list_users": ADMINS, "add_user": ADMINS, "set_role": ADMINS, "disable_user": ADMINS, "enable_user": ADMINS,
    "set_self_review": ADMINS, "promote_model": ADMINS, "reset_password": ADMINS, "unlock_user": ADMINS,
    # the password tab: every logged-in user, for their own password
    "change_password": {"operator", "reviewer", "manager", "admin"},
}
DENIED = re.compile(r"not logged in|is an? (operator|reviewer|manager|admin)(; the \w+ screen is for| and may not)")


def first(gen):
    """The first update of a streaming handler; the stream is then closed."""
    try:
        return next(iter(gen))
    finally:
        gen.close()


def message(result) -> str:
    return result[1] if isinstance(result, tuple) else result.message


def audit_count(svc) -> int:
    with svc.reader() as s:
        return s.scalar(select(func.count()).select_from(AuditEvent))


@pytest.fixture
def made(app_services):
    """A complete draft by olga; a second one she accepted, awaiting review; the draft's state."""
    svc = app_services
    svc.limits.max_steps = 8

    def new_draft() -> DraftState:
        ups = list(draft.generate(svc, "olga", DraftState(), template="Shift handover", length=None, steps=3, seed=2,
                                  temperature=1.0))
        assert ups[-1].kind == "ok", ups[-1].message
        return ups[-1].state

    state = new_draft()
    accepted = new_draft()
    assert draft.accept(svc, "olga", accepted).kind == "ok"
    return svc, state, accepted


def calls(svc, state: DraftState, accepted: DraftState, name: str):
    """The handler behind endpoint `name`, as the UI calls it, for a user."""
    n = itertools.count()
    review_state = ReviewState(document_id=accepted.document_id, document_version=2)
    table = {
        "generate": lambda u: first(draft.generate(svc, u, DraftState(), template="Shift handover", length=None,
                                                   steps=2, seed=1, temperature=1.0)),
        "resume": lambda u: first(draft.resume(svc, u, state, "fast")),
        "pause": lambda u: draft.pause(svc, u, state),
        "set_pace": lambda u: draft.set_pace(svc, u, state, "slow"),
        "view_step": lambda u: draft.view_step(svc, u, state, 1),
        "open_run": lambda u: draft.open_run(svc, u, state, state.run_id),
        "accept": lambda u: draft.accept(svc, u, state),
        "reject": lambda u: draft.reject(svc, u, state, "wrong unit"),
        "discard": lambda u: draft.discard(svc, u, state),
        "download": lambda u: draft.download(svc, u, state, "md"),
        "click_pin": lambda u: steering.toggle_pin(svc, u, state, 20 + next(n), 3, 0),
        "toggle_pin": lambda u: steering.toggle_pin(svc, u, state, 20 + next(n)),
        "pin_span": lambda u: steering.pin_span(svc, u, state, 30 + 2 * (k := next(n)), 31 + 2 * k),
        "lock_term": lambda u: steering.lock_term(svc, u, state, "SHIFT HANDOVER"),
        "edit_span": lambda u: steering.edit_span(svc, u, state, 40 + next(n), 41 + next(n), " valve", "fix"),
        "review_queue": lambda u: review.review_queue(svc, u),
        "open_review": lambda u: review.open_review(svc, u, accepted.document_id),
        "sign_review": lambda u: review.sign_review(svc, u, review_state, "reject", "units missing", sf.PASSWORD),
        "audit_table": lambda u: audit.audit_table(svc, u, AuditQuery()),
        "feedback_charts": lambda u: audit.feedback_charts(svc, u),
        "export": lambda u: audit.export_audit(svc, u, AuditQuery(), "csv"),
        "verify": lambda u: audit.verify_trail(svc, u),
        "list_users": lambda u: admin.list_users(svc, u),
        "add_user": lambda u: admin.add_user(svc, u, f"new{next(n)}", "operator", "a long enough password"),
        "set_role": lambda u: admin.change_role(svc, u, "bob", "operator" if next(n) % 2 else "manager", "moved"),
        "disable_user": lambda u: admin.set_enabled(svc, u, "bob", False, "left"),
        "enable_user": lambda u: admin.set_enabled(svc, u, "bob", True, "back"),
        "set_self_review": lambda u: admin.set_self_review(svc, u, bool(next(n) % 2)),
        "promote_model": lambda u: admin.promote(svc, u, svc.model_id, "keep the default"),
        "reset_password": lambda u: admin.reset_password(svc, u, "bob", "another long password", "forgot it"),
        "unlock_user": lambda u: admin.unlock(svc, u, "bob", "locked out"),
        # a wrong current password: the act is allowed and refused for that reason, nothing changes
        "change_password": lambda u: account.change_password(svc, u, "not the password", "a new long password",
                                                             "a new long password"),
    }
    return table[name]


def test_the_matrix_covers_every_endpoint_and_role():
    ui = set()
    for path in Path(__file__).resolve().parent.parent.glob("app/ui*.py"):
        ui |= set(re.findall(r'api_name="(\w+)"', path.read_text()))
    assert ui <= set(EXPECTED), f"endpoints without an expected row: {sorted(ui - set(EXPECTED))}"
    assert set(USERS) == set(ROLES)


def test_every_endpoint_allows_exactly_the_roles_of_the_product(made):
    svc, state, accepted = made
    found: dict[str, set[str]] = {}
    for name in EXPECTED:  # in the table's order: the destructive acts of each screen come last
        call = calls(svc, state, accepted, name)
        found[name] = set()
        for role, who in [("nobody", NOBODY), *USERS.items()]:
            before = audit_count(svc)
            text = message(call(who))
            if DENIED.search(text):
                assert audit_count(svc) == before, f"{name} refused {role} but wrote to the trail"
            else:
                found[name].add(role)
    assert found == EXPECTED


def test_export_link_serves_its_maker_and_admins_only(made):
    svc, _, _ = made
    link = audit.export_audit(svc, "maya", AuditQuery(), "csv").link
    assert link is not None
    got = {who: export_links.download_export(svc, who, link.token).status for who in [NOBODY, *USERS.values()]}
    assert got == {NOBODY: 401, "olga": 403, "alice": 403, "maya": 200, "adam": 200}


def test_the_live_app_wires_the_same_refusals(live_app):
    """A handful through HTTP: what the handlers refuse, the served app refuses too."""
    from gradio_client import Client

    url, svc = live_app
    olga = Client(url, auth=("olga", sf.PASSWORD), analytics_enabled=False, verbose=False)
    assert DENIED.search(olga.predict(3, 4, 0, api_name="/pin_span")[0])
    assert DENIED.search(olga.predict(None, None, None, None, None, "", "", "csv", api_name="/export")[0])
    assert DENIED.search(olga.predict("mallory", "admin", "a long enough password", api_name="/add_user")[0])
    maya = Client(url, auth=("maya", sf.PASSWORD), analytics_enabled=False, verbose=False)
    refused = maya.submit("Shift handover", 64, 2, 1, 1.0, "", "fast", api_name="/generate")
    refused.result(timeout=60)
    assert DENIED.search(refused.outputs()[-1][0])
    msg, link = maya.predict(None, None, None, None, None, "", "", "csv", api_name="/export")
    token = re.search(r"exports/([0-9a-f.]+)", str(link)).group(1)
    with httpx.Client(base_url=url, timeout=30, trust_env=False) as web:
        assert web.get(f"exports/{token}").status_code == 401  # nobody logged in
        assert web.post("gradio_api/call/add_user", json={"data": ["x", "admin", "p" * 16]}).status_code in (401, 403)
    with svc.reader() as s:
        assert "mallory" not in {u for u in s.scalars(select(AuditEvent.object_id))}
