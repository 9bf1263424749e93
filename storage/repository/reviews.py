"""Reviews: a signed approve / reject decision on a document.

Part of storage.repository (see its docstring for the glossary); Session first, never commits.
"""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from storage import validate
from storage.audit import append_event
from storage.errors import ValidationError
from storage.models import REVIEW_DECISIONS, Review, utcnow
from storage.repository.roles import ActorRef, _who, require
from storage.repository.documents import _lock_document


SIGNATURE_METHOD = "password re-entry"


def record_review(session: Session, *, document_id: int, actor: ActorRef, decision: str, expected_version: int,
                  signature_meaning: str, signature_method: str = SIGNATURE_METHOD,
                  reason: str | None = None) -> Review:
    """Approve or reject (reason required) the version the reviewer read, signed: the review row and
    its audit event carry what the signature means (e.g. "approved as reviewed and correct"), who
    signed (the actor), when (UTC) and how (e.g. "password re-entry"; the caller checks it).
    StaleWrite if the document changed."""
    by = require(session, actor, "review")
    assert by is not None
    if decision not in REVIEW_DECISIONS:
        raise ValidationError(f"unknown decision {decision!r}: choose approve or reject")
    reason = validate.reason(reason, required=decision == "reject", what="reason for rejecting"
                             if decision == "reject" else "reason")
    meaning = validate.reason(signature_meaning, required=True, what="meaning of the signature")
    method = validate.reason(signature_method, required=True, what="signature method")
    assert meaning is not None and method is not None
    if len(method) > 64:
        raise ValidationError(f"the signature method is {len(method)} characters long; at most 64 are allowed")
    doc = _lock_document(session, document_id, expected_version)
    if doc.status not in ("draft", "awaiting_review"):
        raise ValidationError(f"document {doc.id} is {doc.status}: only drafts and documents awaiting review "
                              "can be reviewed")
    old_status = doc.status
    now = utcnow()
    doc.status = "approved" if decision == "approve" else "rejected"
    doc.updated_by_id, doc.updated_at = by.id, now
    review = Review(document_id=doc.id, document_version=expected_version, decision=decision, reason=reason,
                    reviewer_id=by.id, created_at=now, signature_meaning=meaning, signed_by=by.name, signed_at=now,
                    signature_method=method)
    session.add(review)
    session.flush()
    append_event(session, *_who(by), f"review.{decision}", "document", doc.id,
                 old={"status": old_status, "version": expected_version},
                 new={"status": doc.status, "version": doc.version, "review_id": review.id,
                      "signature": {"meaning": meaning, "signed_by": by.name, "signed_at": now, "method": method}},
                 reason=reason)
    return review


def list_reviews(session: Session, document_id: int) -> list[Review]:
    return list(session.scalars(select(Review).where(Review.document_id == document_id).order_by(Review.id)))
