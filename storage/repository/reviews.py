"""Reviews: a signed approve / reject decision on a document, and the sign-off rules.

Part of storage.repository (see its docstring for the glossary); Session first, never commits.

Sign-off rules (each refusal raises ReviewRefused, which record_refusal turns into an audit event)
  status  only a document awaiting review (accepted by its author) can be approved or rejected
  author  nobody reviews a document they created, or one in which they started a run, edited or
          pinned, unless the admin setting allow_self_review is on
"""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from storage import validate
from storage.audit import append_event
from storage.errors import ReviewRefused, ValidationError
from storage.models import REVIEW_DECISIONS, Document, Edit, Pin, Review, Run, User, utcnow
from storage.repository.documents import _lock_document
from storage.repository.roles import ActorRef, _who, require
from storage.repository.settings import ALLOW_SELF_REVIEW, get_setting


SIGNATURE_METHOD = "password re-entry"


def authorship(session: Session, doc: Document, user: User) -> list[str]:
    """What `user` did to the document that makes them one of its authors ([] when nothing):
    "created it", "started run 3" (or "runs 3, 5"), "edited it", "pinned text in it"."""
    done = ["created it"] if doc.created_by_id == user.id else []
    runs = list(session.scalars(select(Run.id).where(Run.document_id == doc.id, Run.started_by_id == user.id)
                                .order_by(Run.id).limit(6)))
    if runs:
        listed = ", ".join(str(r) for r in runs[:5]) + (", ..." if len(runs) > 5 else "")
        done.append(f"started run{'s' if len(runs) > 1 else ''} {listed}")
    for table, what in ((Edit, "edited it"), (Pin, "pinned text in it")):
        hit = session.scalar(select(table.id).where(table.document_id == doc.id, table.created_by_id == user.id)
                             .limit(1))
        if hit is not None:
            done.append(what)
    return done


def _check_sign_off(session: Session, doc: Document, by: User, decision: str, version: int) -> bool:
    """ReviewRefused unless the sign-off rules allow `by` to review `doc`; True when `by` is one of
    its authors and allow_self_review let them review it."""

    def refuse(rule: str, message: str) -> ReviewRefused:
        return ReviewRefused(message, rule=rule, document_id=doc.id, version=version, decision=decision,
                             actor=by.name, role=by.role, status=doc.status)

    if doc.status == "draft":
        raise refuse("status", f"document {doc.id} is a draft: its author must accept it before it can be "
                               "reviewed")
    if doc.status != "awaiting_review":
        raise refuse("status", f"document {doc.id} is {doc.status.replace('_', ' ')}: only documents awaiting "
                               "review can be approved or rejected")
    done = authorship(session, doc, by)
    if not done:
        return False
    if get_setting(session, ALLOW_SELF_REVIEW):
        return True
    raise refuse("author", f"{by.name} may not review document {doc.id}: they {', '.join(done)}. Another "
                           "reviewer must sign it off (an admin can allow reviewers to review drafts they "
                           "wrote or edited)")


def record_review(session: Session, *, document_id: int, actor: ActorRef, decision: str, expected_version: int,
                  signature_meaning: str, signature_method: str = SIGNATURE_METHOD,
                  reason: str | None = None) -> Review:
    """Approve or reject (reason required) the version the reviewer read, signed: the review row and
    its audit event carry what the signature means (e.g. "approved as reviewed and correct"), who
    signed (the actor), when (UTC) and how (e.g. "password re-entry"; the caller checks it), each in
    its own field; the reason holds only the reviewer's words. StaleWrite if the document changed;
    ReviewRefused if a sign-off rule (see the module docstring) refuses it."""
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
    self_review = _check_sign_off(session, doc, by, decision, expected_version)
    old_status = doc.status
    now = utcnow()
    doc.status = "approved" if decision == "approve" else "rejected"
    doc.updated_by_id, doc.updated_at = by.id, now
    review = Review(document_id=doc.id, document_version=expected_version, decision=decision, reason=reason,
                    reviewer_id=by.id, created_at=now, signature_meaning=meaning, signed_by=by.name, signed_at=now,
                    signature_method=method)
    session.add(review)
    session.flush()
    new = {"status": doc.status, "version": doc.version, "review_id": review.id,
           "signature": {"meaning": meaning, "signed_by": by.name, "signed_at": now, "method": method}}
    if self_review:
        new["self_review"] = True
    append_event(session, *_who(by), f"review.{decision}", "document", doc.id,
                 old={"status": old_status, "version": expected_version}, new=new, reason=reason)
    return review


def record_refusal(session: Session, refused: ReviewRefused) -> None:
    """The audit event of a refused review (review.refused): the rule in new, its message as reason.
    Write it in a transaction of its own: the one that tried the review is rolled back."""
    append_event(session, refused.actor, refused.role, "review.refused", "document", refused.document_id,
                 new={"decision": refused.decision, "rule": refused.rule, "status": refused.status,
                      "version": refused.version},
                 reason=str(refused))


def list_reviews(session: Session, document_id: int) -> list[Review]:
    return list(session.scalars(select(Review).where(Review.document_id == document_id).order_by(Review.id)))
