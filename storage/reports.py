"""What the QA charts and the audit screen's filter lists read: Session-first queries, the charts
as pandas frames (the columns gr.BarPlot draws: the first is text, the others numbers).

Glossary
  per_day       audit events per calendar day (the database's date of the UTC timestamp)
  per_template  people's pins and edits per template (storage.repository.feedback_counts)
  per_term      pins and edits per term, the most acted-on first
  pin_rate      pins per run for each model id (all runs of the model, pinned or not)
  versions      per model version: drafts, edits and people's pins per draft, approval rate
                (version_stats); a draft counts for the model of its newest run
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

import pandas as pd
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from storage import repository as repo
from storage.models import ROLES, AuditEvent, Document, Edit, Pin, Run

TOP_TERMS = 15  # terms shown in the per-term chart


def events_per_day(session: Session, *, since: datetime) -> list[tuple[str, int]]:
    """(day as YYYY-MM-DD, number of audit events) from `since` on, oldest day first."""
    day = func.date(AuditEvent.ts)
    stmt = select(day, func.count()).where(AuditEvent.ts >= since).group_by(day).order_by(day)
    return [(str(d), int(n)) for d, n in session.execute(stmt)]


def runs_per_model(session: Session) -> dict[str, int]:
    """Number of runs per model id."""
    return dict(session.execute(select(Run.model_id, func.count(Run.id)).group_by(Run.model_id)).all())


def pins_per_model(session: Session) -> dict[str, int]:
    """Number of pin rows of the runs of each model id (models without pins are absent)."""
    stmt = select(Run.model_id, func.count(Pin.id)).join(Run, Run.id == Pin.run_id).group_by(Run.model_id)
    return dict(session.execute(stmt).all())


def feedback_frames(session: Session, *, since: datetime, top_terms: int = TOP_TERMS) -> dict[str, pd.DataFrame]:
    """The four QA charts (see the glossary) as frames keyed per_day, per_template, per_term, pin_rate."""
    per_day = events_per_day(session, since=since)
    by_template = repo.feedback_counts(session, "template")
    by_term = repo.feedback_counts(session, "term")[:top_terms]
    runs = runs_per_model(session)
    pins = pins_per_model(session)
    return {
        "per_day": _frame(per_day, {"day": "string", "events": "int64"}),
        "per_template": _frame([(r.key, r.edits, r.pins) for r in by_template],
                               {"template": "string", "edits": "int64", "pins": "int64"}),
        "per_term": _frame([(r.key, r.edits, r.pins) for r in by_term],
                           {"term": "string", "edits": "int64", "pins": "int64"}),
        "pin_rate": _frame([(m, pins.get(m, 0) / n if n else 0.0, n) for m, n in runs.items()],
                           {"model": "string", "pins per run": "float64", "runs": "int64"}),
    }


def _frame(rows: list[tuple[Any, ...]], dtypes: dict[str, str]) -> pd.DataFrame:
    """Rows as a frame with these columns and dtypes, also when there are no rows: the first column
    is text (a chart draws it as categories, even a day or a number-like term), the others numbers."""
    return pd.DataFrame(rows, columns=list(dtypes)).astype(dtypes)


def audit_actions(session: Session) -> list[str]:
    """Every action the audit trail holds, sorted."""
    return sorted(session.scalars(select(AuditEvent.action).distinct()))


def audit_choices(session: Session) -> dict[str, list[str]]:
    """What the audit screen's filters offer: actions, users, roles and templates by name."""
    return {
        "actions": audit_actions(session),
        "users": [u.name for u in repo.list_users(session)],
        "roles": list(ROLES),
        "templates": [t.name for t in repo.list_templates(session)],
    }


@dataclass(frozen=True)
class VersionStats:
    """How reviewers met one model version's drafts (see the glossary: versions)."""

    model_id: str
    drafts: int  # documents whose newest run used this model
    edits: int  # edits of those documents
    pins: int  # people's pins in them (not the rows edits make or move)
    approved: int
    rejected: int

    @property
    def edits_per_draft(self) -> float:
        return self.edits / self.drafts if self.drafts else 0.0

    @property
    def pins_per_draft(self) -> float:
        return self.pins / self.drafts if self.drafts else 0.0

    @property
    def approval_rate(self) -> float | None:
        """Approved among the reviewed (approved or rejected); None when none was reviewed."""
        reviewed = self.approved + self.rejected
        return self.approved / reviewed if reviewed else None


def version_stats(session: Session) -> list[VersionStats]:
    """One row per model id that drafted a document, the most drafts first."""
    newest = select(Run.document_id, func.max(Run.id).label("run_id")).group_by(Run.document_id).subquery()
    doc_model = (select(Run.document_id.label("document_id"), Run.model_id.label("model_id"))
                 .join(newest, newest.c.run_id == Run.id).subquery())
    drafts: dict[str, list[int]] = {}
    status_rows = session.execute(select(doc_model.c.model_id, Document.status, func.count())
                                  .join(Document, Document.id == doc_model.c.document_id)
                                  .group_by(doc_model.c.model_id, Document.status))
    for model, status, n in status_rows:
        row = drafts.setdefault(model, [0, 0, 0, 0, 0])  # drafts, edits, pins, approved, rejected
        row[0] += n
        row[3] += n if status == "approved" else 0
        row[4] += n if status == "rejected" else 0
    people_pins = (Pin.kind != "edit") & Pin.supersedes_pin_id.is_(None)
    for slot, table, extra in ((1, Edit, None), (2, Pin, people_pins)):
        stmt = (select(doc_model.c.model_id, func.count(table.id))
                .join(table, table.document_id == doc_model.c.document_id).group_by(doc_model.c.model_id))
        if extra is not None:
            stmt = stmt.where(extra)
        for model, n in session.execute(stmt):
            drafts[model][slot] += n
    rows = [VersionStats(m, *v) for m, v in drafts.items()]
    return sorted(rows, key=lambda r: (-r.drafts, r.model_id))
