"""repository: reviews (approve / reject of a document awaiting review) and their electronic
signature. The sign-off rules are in test_review_rules.py. SQLite and PostgreSQL."""

from __future__ import annotations

import json

import pytest
from sqlalchemy import func, select

import storage_fixtures as sf
from storage import repository as repo
from storage.audit import verify_chain
from storage.db import transaction
from storage.errors import PermissionDenied, ReviewRefused, ValidationError
from storage.models import AuditEvent, Review, utcnow


APPROVED = "approved as reviewed and correct"


def _rows(factory, table) -> int:
    with sf.reader(factory)() as s:
        return s.scalar(select(func.count()).select_from(table))


# ---------------------------------------------------------------- reviews


def _submit(factory, doc_id: int, version: int = 1) -> int:
    """The author (olga) accepts the draft: it awaits review; returns the new version."""
    with transaction(factory) as s:
        doc = repo.update_document(s, doc_id, actor="olga", expected_version=version, status="awaiting_review")
        return doc.version


def test_reviews(factory, draft):
    doc_id = draft["document"]
    v = _submit(factory, doc_id)
    with pytest.raises(ValidationError, match="reason for rejecting is required"), transaction(factory) as s:
        repo.record_review(s, document_id=doc_id, actor="alice", decision="reject", expected_version=v,
                           signature_meaning=APPROVED)
    with pytest.raises(ValidationError, match="approve or reject"), transaction(factory) as s:
        repo.record_review(s, document_id=doc_id, actor="alice", decision="maybe", expected_version=v,
                           signature_meaning=APPROVED)
    with pytest.raises(PermissionDenied, match="may not approve"), transaction(factory) as s:
        repo.record_review(s, document_id=doc_id, actor="olga", decision="approve", expected_version=v,
                           signature_meaning=APPROVED)
    assert _rows(factory, Review) == 0
    with transaction(factory) as s:
        repo.record_review(s, document_id=doc_id, actor="alice", decision="reject", expected_version=v,
                           reason="the finding lacks a location", signature_meaning="rejected")
    with pytest.raises(ReviewRefused, match="is rejected: only documents awaiting review"), transaction(factory) as s:
        repo.record_review(s, document_id=doc_id, actor="bob", decision="approve", expected_version=v + 1,
                           signature_meaning=APPROVED)
    with sf.reader(factory)() as s:
        doc = repo.get_document(s, doc_id)
        (review,) = repo.list_reviews(s, doc_id)
        assert (doc.status, review.decision, review.document_version) == ("rejected", "reject", v)
        ev = s.scalars(select(AuditEvent).where(AuditEvent.action == "review.reject")).one()
        assert ev.reason == "the finding lacks a location" and ev.actor == "alice"


def test_reviews_carry_an_electronic_signature(factory, draft):
    doc_id = draft["document"]
    v = _submit(factory, doc_id)
    for meaning, method, words in (("", "password re-entry", "meaning of the signature is empty"),
                                   (None, "password re-entry", "meaning of the signature is required"),
                                   (APPROVED, "", "signature method is empty"),
                                   (APPROVED, "x" * 65, "at most 64")):
        with pytest.raises(ValidationError, match=words), transaction(factory) as s:
            repo.record_review(s, document_id=doc_id, actor="bob", decision="approve", expected_version=v,
                               signature_meaning=meaning, signature_method=method)
    assert _rows(factory, Review) == 0
    before = utcnow()
    with transaction(factory) as s:
        repo.record_review(s, document_id=doc_id, actor="bob", decision="approve", expected_version=v,
                           reason="checked against the photos", signature_meaning=APPROVED)
    with sf.reader(factory)() as s:
        (review,) = repo.list_reviews(s, doc_id)
        assert (review.reason, review.signature_meaning, review.signed_by, review.signature_method) == (
            "checked against the photos", APPROVED, "bob", "password re-entry")
        assert review.signed_at.tzinfo is not None and before <= review.signed_at <= utcnow()
        ev = s.scalars(select(AuditEvent).where(AuditEvent.action == "review.approve")).one()
        assert ev.reason == "checked against the photos"
        signature = json.loads(ev.new_value)["signature"]
        assert signature == {"meaning": APPROVED, "signed_by": "bob", "method": "password re-entry",
                             "signed_at": review.signed_at.strftime("%Y-%m-%dT%H:%M:%S.%fZ")}
        assert verify_chain(s).ok
