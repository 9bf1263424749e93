"""Documents: creation, listing, the review queue and versioned updates (StaleWrite).

Part of storage.repository (see its docstring for the glossary); Session first, never commits.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from storage import validate
from storage.audit import append_event
from storage.errors import NotFound, StaleWrite, ValidationError
from storage.models import DOCUMENT_STATUSES, Document, User, utcnow
from storage.repository.roles import ActorRef, _who, require
from storage.repository.templates import get_template


def create_document(session: Session, *, actor: ActorRef, title: str, template_id: int | None = None,
                    text: str = "") -> Document:
    by = require(session, actor, "document.create")
    validate.text(title, "title", max_chars=validate.MAX_TITLE_CHARS)
    validate.text(text, "document text", max_chars=validate.MAX_DOCUMENT_CHARS, allow_empty=True)
    if template_id is not None:
        get_template(session, template_id)
    now = utcnow()
    doc = Document(title=title, template_id=template_id, text=text, status="draft", created_by_id=by.id,
                   created_at=now, updated_by_id=by.id, updated_at=now)
    session.add(doc)
    session.flush()
    append_event(session, *_who(by), "document.create", "document", doc.id,
                 new={"title": title, "template_id": template_id, "text": text})
    return doc


def get_document(session: Session, document_id: int) -> Document:
    doc = session.get(Document, document_id)
    if doc is None:
        raise NotFound(f"no document {document_id}")
    return doc


def list_documents(session: Session, *, status: str | None = None, limit: int = 100, offset: int = 0) -> list[Document]:
    """Newest first."""
    stmt = select(Document).order_by(Document.updated_at.desc(), Document.id.desc()).limit(limit).offset(offset)
    if status is not None:
        if status not in DOCUMENT_STATUSES:
            raise ValidationError(f"unknown status {status!r}: choose one of {', '.join(DOCUMENT_STATUSES)}")
        stmt = stmt.where(Document.status == status)
    return list(session.scalars(stmt))


def documents_awaiting_review(session: Session, *, limit: int = 100) -> list[Document]:
    """Oldest first: the review queue."""
    stmt = select(Document).where(Document.status == "awaiting_review").order_by(Document.updated_at, Document.id)
    return list(session.scalars(stmt.limit(limit)))


def _lock_document(session: Session, document_id: int, expected_version: int) -> Document:
    """The document, fresh from the database and row-locked (PostgreSQL; SQLite holds the write lock
    already), or StaleWrite if someone saved another version since the caller read it."""
    stmt = (select(Document).where(Document.id == document_id).with_for_update()
            .execution_options(populate_existing=True))
    doc = session.scalars(stmt).one_or_none()
    if doc is None:
        raise NotFound(f"no document {document_id}")
    if not isinstance(expected_version, int) or doc.version != expected_version:
        who = session.scalar(select(User.name).where(User.id == doc.updated_by_id)) if doc.updated_by_id else None
        raise StaleWrite(f"document {doc.id} ({doc.title!r})", expected_version, doc.version, who, doc.updated_at)
    return doc


_SETTABLE_STATUSES = ("draft", "awaiting_review", "discarded")  # approved / rejected only through record_review


def update_document(session: Session, document_id: int, *, actor: ActorRef, expected_version: int,
                    text: str | None = None, title: str | None = None, status: str | None = None,
                    reason: str | None = None) -> Document:
    """Change text / title / status of the version the actor saw; StaleWrite if it moved on."""
    by = require(session, actor, "document.update")
    reason = validate.reason(reason, required=False)
    if text is not None:
        validate.text(text, "document text", max_chars=validate.MAX_DOCUMENT_CHARS, allow_empty=True)
    if title is not None:
        validate.text(title, "title", max_chars=validate.MAX_TITLE_CHARS)
    if status is not None and status not in _SETTABLE_STATUSES:
        raise ValidationError(f"status {status!r} cannot be set here: choose one of {', '.join(_SETTABLE_STATUSES)} "
                              "(approve and reject go through a review)")
    doc = _lock_document(session, document_id, expected_version)
    old: dict[str, Any] = {}
    new: dict[str, Any] = {}
    for field, value in (("text", text), ("title", title), ("status", status)):
        if value is not None and getattr(doc, field) != value:
            old[field], new[field] = getattr(doc, field), value
            setattr(doc, field, value)
    if not new:
        return doc
    doc.updated_by_id = by.id
    doc.updated_at = utcnow()
    session.flush()  # bumps doc.version
    new["version"] = doc.version
    old["version"] = expected_version
    append_event(session, *_who(by), "document.update", "document", doc.id, old=old, new=new, reason=reason)
    return doc
