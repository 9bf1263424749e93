"""The review screen's handlers: the queue of drafts awaiting review, a draft with its history,
and the signed decision (approve / reject, signed by re-entering the password).

Audit events
  approve / reject -> review.approve / review.reject; a wrong password -> signature.failed (it
  counts towards the account's lock like a failed login, app.auth.check_own_password);
  a review the sign-off rules refuse (a draft, the reviewer's own work) -> review.refused
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from app import render
from app.auth import check_own_password, require_permission, require_screen
from app.common import Refused, as_int, safe, short
from app.services import Services
from app.state import ReviewState
from storage import repository as repo
from storage import signoff
from storage.audit import AuditFilter, append_event, list_events
from storage.db import transaction

SIGNATURE_MEANINGS = {
    "approve": "I have reviewed this report and approve it as accurate and complete.",
    "reject": "I have reviewed this report and reject it for the reason given.",
}
QUEUE_HEADERS = ["document", "title", "template", "by", "updated (UTC)", "version"]
HISTORY_HEADERS = ["#", "when (UTC)", "who", "role", "action", "old", "new", "reason"]


@dataclass
class ReviewUpdate:
    message: str = ""
    kind: str = "info"
    queue: list[list[Any]] | None = None
    document_html: str | None = None
    history_html: str | None = None
    state: ReviewState | None = None


def _review_error(message: str) -> ReviewUpdate:
    return ReviewUpdate(message=message, kind="error")


def _queue(svc: Services) -> list[list[Any]]:
    with svc.reader() as s:
        rows = []
        for d in repo.documents_awaiting_review(s):
            rows.append([d.id, d.title, d.template.name if d.template else "", d.updated_by.name if d.updated_by else "",
                         d.updated_at.strftime("%Y-%m-%d %H:%M"), d.version])
        return rows


@safe(_review_error)
def review_queue(svc: Services, username: str | None) -> ReviewUpdate:
    require_screen(svc, username, "review")
    q = _queue(svc)
    return ReviewUpdate(message=f"{len(q)} draft(s) awaiting review", queue=q)


@safe(_review_error)
def open_review(svc: Services, username: str | None, document_id: Any) -> ReviewUpdate:
    """The document and its history (audit events about it, edits, pins, reviews)."""
    require_screen(svc, username, "review")
    doc_id = as_int(document_id, "document", 1, 2**62)
    with svc.reader() as s:
        doc = repo.get_document(s, doc_id)
        meta = [("document", doc.id), ("status", doc.status.replace("_", " ")), ("version", doc.version),
                ("template", doc.template.name if doc.template else "none"),
                ("created by", doc.created_by.name if doc.created_by else ""),
                ("updated (UTC)", doc.updated_at.strftime("%Y-%m-%d %H:%M:%S"))]
        doc_html = render.document_html(doc.title, doc.text, meta)
        events = list_events(s, AuditFilter(document_id=doc_id), limit=500, newest_first=False)
        rows = [[e.seq, e.ts.strftime("%Y-%m-%d %H:%M:%S"), e.actor, e.role, e.action, short(e.old_value),
                 short(e.new_value), e.reason or ""] for e in events]
        version, title = doc.version, doc.title
    hist = render.table_html(HISTORY_HEADERS, rows)
    return ReviewUpdate(message=f"reviewing document {doc_id} ({title}), version {version}", document_html=doc_html,
                        history_html=hist, state=ReviewState(document_id=doc_id, document_version=version))


@safe(_review_error)
def sign_review(svc: Services, username: str | None, rstate: ReviewState | None, decision: str, reason: str,
                password: str) -> ReviewUpdate:
    """Approve or reject the version on screen, signed by re-entering the password; the review row
    records the meaning of the signature, the signer, the time and the method, apart from the reason."""
    actor = require_permission(svc, username, "review", "approve or reject drafts")
    require_screen(svc, username, "review")
    if rstate is None or rstate.document_id is None or rstate.document_version is None:
        raise Refused("open a draft from the queue first")
    if decision not in SIGNATURE_MEANINGS:
        raise Refused("choose approve or reject")
    reason = (reason or "").strip()
    if decision == "reject" and not reason:
        raise Refused("say why you reject the draft")
    ok, locked = check_own_password(svc, actor.name, password)
    if not ok:
        with transaction(svc.factory) as s:
            append_event(s, actor.name, actor.role, "signature.failed", "document", rstate.document_id,
                         new={"decision": decision, "version": rstate.document_version})
        raise Refused(locked or "the password is not right: the signature was not applied")
    signoff.sign(svc.factory, document_id=rstate.document_id, actor=actor.name, decision=decision,
                 expected_version=rstate.document_version, reason=reason or None,
                 signature_meaning=SIGNATURE_MEANINGS[decision], signature_method="password re-entry")
    verb = "approved" if decision == "approve" else "rejected"
    return ReviewUpdate(message=f"document {rstate.document_id} {verb} and signed", kind="ok", queue=_queue(svc),
                        state=ReviewState(), document_html="", history_html="")
