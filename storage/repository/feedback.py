"""QA feedback: pins and edits counted by term, template, model or user; edit pairs.

Part of storage.repository (see its docstring for the glossary); Session first, never commits.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from storage.errors import ValidationError
from storage.models import Document, Edit, Pin, Run, Template, User


FeedbackGroup = Literal["term", "template", "model", "user"]
NO_TEMPLATE, NO_RUN = "(no template)", "(no run)"


@dataclass(frozen=True)
class FeedbackCount:
    """Pins and edits for one term / template / model version / user."""

    key: str
    pins: int
    edits: int

    @property
    def total(self) -> int:
        return self.pins + self.edits


def _feedback_key(table: type[Pin] | type[Edit], by: str) -> tuple[Any, list[Any]]:
    """The grouping column and the joins it needs."""
    if by == "term":
        col = table.text if table is Pin else table.old_text
        return func.lower(func.trim(col)), []
    if by == "template":
        return func.coalesce(Template.name, NO_TEMPLATE), [
            (Document, Document.id == table.document_id), (Template, Template.id == Document.template_id)]
    if by == "model":
        return func.coalesce(Run.model_id, NO_RUN), [(Run, Run.id == table.run_id)]
    if by == "user":
        return User.name, [(User, User.id == table.created_by_id)]
    raise ValidationError(f"unknown grouping {by!r}: choose term, template, model or user")


def feedback_counts(session: Session, by: FeedbackGroup, *, since: datetime | None = None,
                    until: datetime | None = None, include_removed_pins: bool = True) -> list[FeedbackCount]:
    """Pins and edits per term (pinned text / edited-away text, case-folded), per template, per
    model id, or per user; most acted-on first. since inclusive, until exclusive."""
    counts: dict[str, list[int]] = {}
    for slot, table in ((0, Pin), (1, Edit)):
        key, joins = _feedback_key(table, by)
        stmt = select(key, func.count(table.id)).select_from(table)
        for target, on in joins:
            stmt = stmt.outerjoin(target, on) if by in ("template", "model") else stmt.join(target, on)
        if since is not None:
            stmt = stmt.where(table.created_at >= since)
        if until is not None:
            stmt = stmt.where(table.created_at < until)
        if table is Pin:  # people's pins: not the rows edits make or move
            stmt = stmt.where(Pin.kind != "edit", Pin.supersedes_pin_id.is_(None))
            if not include_removed_pins:
                stmt = stmt.where(Pin.removed_at.is_(None))
        for k, n in session.execute(stmt.group_by(key)):
            if by == "term" and not k:
                continue  # pure insertions have no old text
            counts.setdefault(k, [0, 0])[slot] += n
    rows = [FeedbackCount(k, p, e) for k, (p, e) in counts.items()]
    return sorted(rows, key=lambda r: (-r.total, r.key))


@dataclass(frozen=True)
class EditPair:
    """One correction as training data: what the model wrote and what a person put instead."""

    edit_id: int
    document_id: int
    template: str | None
    model_id: str | None
    user: str
    unit: str
    step_index: int | None
    old_text: str
    new_text: str
    reason: str
    created_at: datetime


def edit_pairs(session: Session, *, template_id: int | None = None, model_id: str | None = None,
               user: str | None = None, since: datetime | None = None, until: datetime | None = None) -> list[EditPair]:
    stmt = (select(Edit, Template.name, Run.model_id, User.name)
            .join(Document, Document.id == Edit.document_id)
            .outerjoin(Template, Template.id == Document.template_id)
            .outerjoin(Run, Run.id == Edit.run_id)
            .join(User, User.id == Edit.created_by_id)
            .order_by(Edit.id))
    if template_id is not None:
        stmt = stmt.where(Document.template_id == template_id)
    if model_id is not None:
        stmt = stmt.where(Run.model_id == model_id)
    if user is not None:
        stmt = stmt.where(User.name == user)
    if since is not None:
        stmt = stmt.where(Edit.created_at >= since)
    if until is not None:
        stmt = stmt.where(Edit.created_at < until)
    return [EditPair(e.id, e.document_id, t, m, u, e.unit, e.step_index, e.old_text, e.new_text, e.reason, e.created_at)
            for e, t, m, u in session.execute(stmt)]
