"""The sign-off rules in storage: only a document awaiting review is approved or rejected, and
never by one of its authors (who created it, started a run of it, edited or pinned in it) unless
the admin setting allow_self_review is on. Every refusal is audited (review.refused) in a
transaction of its own and leaves no review. SQLite and PostgreSQL."""

from __future__ import annotations

import json

import pytest
import storage_fixtures as sf
from sqlalchemy import func, select

from storage import repository as repo
from storage import signoff
from storage.audit import verify_chain
from storage.db import transaction
from storage.errors import ReviewRefused
from storage.models import AuditEvent, Review

MEANING = "I have reviewed this report and approve it as accurate and complete."


def _document(factory, *, creator="olga", runner="olga", editor=None, pinner=None, submit=True) -> tuple[int, int]:
    """A document with one run of one step, maybe an edit and a pin, accepted by its creator
    (awaiting review) when `submit`; returns (id, version)."""
    with transaction(factory) as s:
        d = repo.create_document(s, actor=creator, title="Pump 7", text="The pump leaks oil.")
        r = repo.create_run(s, document_id=d.id, actor=runner, model_id="m", model_checksum="c", seed=1,
                            sampler_settings={})
        repo.record_step(s, r.id, 0, [100 + i for i in range(8)], [0.5] * 8)
        if editor:
            repo.record_run_edit(s, document_id=d.id, actor=editor, run_id=r.id, step_index=0, span_start=2,
                                 span_end=3, old_text="leaks", new_text="drips", reason="more precise")
        if pinner:
            repo.add_pin(s, document_id=d.id, actor=pinner, run_id=r.id, step_index=0, span_start=0, span_end=1,
                         text="The")
        if submit:
            repo.update_document(s, d.id, actor=creator, expected_version=d.version, status="awaiting_review")
        return d.id, d.version


def _sign(factory, doc: tuple[int, int], actor: str, decision: str = "approve", reason: str | None = None) -> int:
    return signoff.sign(factory, document_id=doc[0], actor=actor, decision=decision, expected_version=doc[1],
                        signature_meaning=MEANING, reason=reason)


def _refusals(factory) -> list[AuditEvent]:
    with sf.reader(factory)() as s:
        return list(s.scalars(select(AuditEvent).where(AuditEvent.action == "review.refused")
                              .order_by(AuditEvent.seq)))


def _reviews(factory) -> int:
    with sf.reader(factory)() as s:
        return s.scalar(select(func.count()).select_from(Review))


def _status(factory, doc: tuple[int, int]) -> tuple[str, int]:
    with sf.reader(factory)() as s:
        d = repo.get_document(s, doc[0])
        return d.status, d.version


def test_a_draft_is_refused_and_the_refusal_is_audited(factory):
    doc = _document(factory, submit=False)
    with pytest.raises(ReviewRefused, match=f"document {doc[0]} is a draft: its author must accept it"):
        _sign(factory, doc, "bob")
    assert _reviews(factory) == 0 and _status(factory, doc) == ("draft", doc[1])
    (ev,) = _refusals(factory)
    assert (ev.actor, ev.role, ev.object_type, ev.document_id) == ("bob", "reviewer", "document", doc[0])
    assert json.loads(ev.new_value) == {"decision": "approve", "rule": "status", "status": "draft",
                                        "version": doc[1]}
    assert "is a draft" in ev.reason
    with sf.reader(factory)() as s:
        assert verify_chain(s).ok


def test_record_review_alone_refuses_and_writes_nothing(factory):
    """The caller's transaction rolls back on the refusal: the audit event needs its own (signoff)."""
    doc = _document(factory, submit=False)
    with pytest.raises(ReviewRefused, match="is a draft"), transaction(factory) as s:
        repo.record_review(s, document_id=doc[0], actor="bob", decision="approve", expected_version=doc[1],
                           signature_meaning=MEANING)
    assert _reviews(factory) == 0 and _refusals(factory) == []


@pytest.mark.parametrize("status", ["approved", "discarded"])
def test_only_documents_awaiting_review_are_reviewed(factory, status):
    doc = _document(factory)
    if status == "approved":
        _sign(factory, doc, "bob")
    else:
        with transaction(factory) as s:
            repo.update_document(s, doc[0], actor="olga", expected_version=doc[1], status="discarded")
    again = (doc[0], _status(factory, doc)[1])
    with pytest.raises(ReviewRefused, match=f"is {status}: only documents awaiting review"):
        _sign(factory, again, "alice", "reject", reason="too late")
    assert _reviews(factory) == (1 if status == "approved" else 0)
    (ev,) = _refusals(factory)
    assert json.loads(ev.new_value)["status"] == status and ev.actor == "alice"


@pytest.mark.parametrize("act, words", [
    (dict(creator="alice"), "they created it"),
    (dict(runner="alice"), "they started run"),
    (dict(editor="alice"), "they edited it"),
    (dict(pinner="alice"), "they pinned text in it"),
])
def test_authors_may_not_review_their_document_another_reviewer_may(factory, act, words):
    doc = _document(factory, **act)
    for decision, reason in (("approve", None), ("reject", "the location is missing")):
        with pytest.raises(ReviewRefused, match=f"alice may not review document {doc[0]}: {words}"):
            _sign(factory, doc, "alice", decision, reason)
    assert _reviews(factory) == 0 and _status(factory, doc) == ("awaiting_review", doc[1])
    refusals = _refusals(factory)
    assert [(e.actor, json.loads(e.new_value)["decision"], json.loads(e.new_value)["rule"]) for e in refusals] == [
        ("alice", "approve", "author"), ("alice", "reject", "author")]
    assert all(words in e.reason and "Another reviewer must sign it off" in e.reason for e in refusals)
    review_id = _sign(factory, doc, "bob", reason="checked on site")
    with sf.reader(factory)() as s:
        (review,) = repo.list_reviews(s, doc[0])
        assert (review.id, review.signed_by, review.reason) == (review_id, "bob", "checked on site")
        assert repo.get_document(s, doc[0]).status == "approved"
        ev = s.scalars(select(AuditEvent).where(AuditEvent.action == "review.approve")).one()
        assert "self_review" not in json.loads(ev.new_value)


def test_authorship_lists_every_part_a_user_had(factory):
    doc = _document(factory, creator="alice", runner="alice", editor="alice", pinner="alice")
    with sf.reader(factory)() as s:
        d = repo.get_document(s, doc[0])
        run_id = repo.list_runs(s, doc[0])[0].id
        assert repo.authorship(s, d, repo.get_user(s, "alice")) == [
            "created it", f"started run {run_id}", "edited it", "pinned text in it"]
        assert repo.authorship(s, d, repo.get_user(s, "bob")) == []


def test_allow_self_review_lets_an_author_review(factory):
    mine, later = _document(factory, creator="alice", editor="alice"), _document(factory, pinner="alice")
    with transaction(factory) as s:
        repo.set_setting(s, repo.ALLOW_SELF_REVIEW, True, actor="adam", reason="one reviewer this week")
    _sign(factory, mine, "alice", reason="checked again")
    assert _refusals(factory) == [] and _status(factory, mine)[0] == "approved"
    with sf.reader(factory)() as s:
        ev = s.scalars(select(AuditEvent).where(AuditEvent.action == "review.approve")).one()
        new = json.loads(ev.new_value)
        assert new["self_review"] is True and new["signature"]["meaning"] == MEANING
        assert ev.reason == "checked again"  # the reviewer's words only, not the signature's meaning
    with transaction(factory) as s:
        repo.set_setting(s, repo.ALLOW_SELF_REVIEW, False, actor="adam")
    with pytest.raises(ReviewRefused, match="pinned text in it"):
        _sign(factory, later, "alice")
    assert len(_refusals(factory)) == 1 and _reviews(factory) == 1


def test_the_setting_does_not_open_drafts(factory):
    with transaction(factory) as s:
        repo.set_setting(s, repo.ALLOW_SELF_REVIEW, True, actor="adam")
    doc = _document(factory, creator="alice", submit=False)
    with pytest.raises(ReviewRefused, match="is a draft"):
        _sign(factory, doc, "alice")
    assert _reviews(factory) == 0 and len(_refusals(factory)) == 1
