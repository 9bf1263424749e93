"""The audit screen's handlers: the filtered trail, the QA charts and the comparison of model
versions, export (itself an audit event) and verification of the hash chain. The queries behind the charts and the filter lists are
storage.reports.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

from app.auth import require_permission, require_screen
from app.common import Refused, as_int, as_text, safe, short
from app.export_links import Link, link_for
from app.services import Services
from storage import reports
from storage import repository as repo
from storage.audit import AuditFilter, list_events, verify_chain
from storage.db import transaction
from storage.export import export_audit as write_export
from storage.models import ROLES

FORMATS = ("csv", "xlsx", "parquet", "json")
MAX_NAME_CHARS = 200  # a filter's user, role, action or template name
CHART_DAYS = 30  # the QA charts cover this many days back
MAX_CHART_DAYS = 36_600  # a hundred years: the most a chart may look back
NO_DATA = "No data yet"
VERSION_HEADERS = ["model version", "drafts", "edits per draft", "pins per draft", "approved", "rejected",
                   "approval rate"]
AUDIT_HEADERS = ["seq", "when (UTC)", "user", "role", "action", "object", "document", "template", "old", "new",
                 "reason"]


@dataclass
class AuditQuery:
    user: str = ""
    role: str = ""
    action: str = ""
    document: Any = None
    template: str = ""
    since: str = ""
    until: str = ""


@dataclass
class AuditUpdate:
    message: str = ""
    kind: str = "info"
    rows: list[list[Any]] | None = None
    charts: dict[str, Any] | None = None
    chart_notes: dict[str, str] | None = None  # per chart: why it is empty, or "" when it has bars
    versions: list[list[Any]] | None = None  # VERSION_HEADERS: how reviewers met each model's drafts
    file: str | None = None  # the export on the server (private: fetched through `link`)
    link: Link | None = None


def _audit_error(message: str) -> AuditUpdate:
    return AuditUpdate(message=message, kind="error")


def _parse_day(value: Any, what: str) -> datetime | None:
    if value in (None, ""):
        return None
    if isinstance(value, (int, float)):  # gr.DateTime gives a timestamp
        try:
            return datetime.fromtimestamp(float(value), timezone.utc)
        except (OverflowError, OSError, ValueError):  # NaN, or a time before year 1 or after 9999
            raise Refused(f"{what}: {value!r} is not a time between the years 1 and 9999") from None
    if isinstance(value, datetime):
        return value if value.tzinfo else value.replace(tzinfo=timezone.utc)
    if not isinstance(value, str):
        raise Refused(f"{what}: write a date as YYYY-MM-DD (optionally with a time)")
    try:
        ts = datetime.fromisoformat(value.strip())
        return ts.replace(tzinfo=timezone.utc) if ts.tzinfo is None else ts.astimezone(timezone.utc)
    except (ValueError, OverflowError):  # OverflowError: an offset that moves it past year 1 or 9999
        raise Refused(f"{what}: write a date as YYYY-MM-DD (optionally with a time)") from None


def audit_filter(svc: Services, q: AuditQuery) -> AuditFilter:
    """The storage filter for what the page's filter fields say; Refused for a bad role or date."""
    template_id = None
    template = as_text(q.template, "the template", MAX_NAME_CHARS).strip()
    if template:
        with svc.reader() as s:
            template_id = repo.get_template_by_name(s, template).id
    role = as_text(q.role, "the role", MAX_NAME_CHARS) or None
    if role is not None and role not in ROLES:
        raise Refused(f"unknown role {role!r}")
    doc = None
    if q.document not in (None, "", 0, "0"):  # empty or 0: every document
        doc = as_int(q.document, "document", 1, 2**62)
    since = _parse_day(q.since, "from")
    until = _parse_day(q.until, "until")
    if until is not None and isinstance(q.until, str) and len(q.until.strip()) == 10:
        until = until + timedelta(days=1)  # a date means "through that day"
    user = as_text(q.user, "the user", MAX_NAME_CHARS).strip() or None
    action = as_text(q.action, "the action", MAX_NAME_CHARS).strip() or None
    return AuditFilter(user=user, role=role, action=action,
                       document_id=doc, template_id=template_id, since=since, until=until)


@safe(_audit_error)
def audit_table(svc: Services, username: str | None, q: AuditQuery, limit: int = 500) -> AuditUpdate:
    require_permission(svc, username, "audit.read", "read the audit trail")
    require_screen(svc, username, "audit")
    f = audit_filter(svc, q)
    with svc.reader() as s:
        events = list_events(s, f, limit=limit)
        rows = [[e.seq, e.ts.strftime("%Y-%m-%d %H:%M:%S"), e.actor, e.role, e.action, f"{e.object_type} {e.object_id}",
                 e.document_id, e.template_id, short(e.old_value, 80), short(e.new_value, 80), e.reason or ""]
                for e in events]
    more = " (newest shown; export for all)" if len(rows) >= limit else ""
    return AuditUpdate(message=f"{len(rows)} event(s){more}", rows=rows)


@safe(_audit_error)
def feedback_charts(svc: Services, username: str | None, days: int = CHART_DAYS) -> AuditUpdate:
    """Frames for the QA charts: events per day, edits per template, edits per term, pin rate per
    model; a chart without rows gets a note saying so (NO_DATA), the others an empty note."""
    require_permission(svc, username, "feedback.read", "read QA feedback")
    require_screen(svc, username, "audit")
    days = as_int(days, "days", 1, MAX_CHART_DAYS)
    since = datetime.now(timezone.utc) - timedelta(days=days)
    with svc.reader() as s:
        charts = reports.feedback_frames(s, since=since)
        versions = [[v.model_id, v.drafts, round(v.edits_per_draft, 2), round(v.pins_per_draft, 2), v.approved,
                     v.rejected, "" if v.approval_rate is None else f"{100 * v.approval_rate:.0f} %"]
                    for v in reports.version_stats(s)]
    empty = {"per_day": f"{NO_DATA}: no audit events in the last {days} days",
             "per_template": f"{NO_DATA}: nobody has pinned or edited a draft",
             "per_term": f"{NO_DATA}: nobody has pinned or edited a term",
             "pin_rate": f"{NO_DATA}: no runs"}
    notes = {name: empty[name] if len(frame) == 0 else "" for name, frame in charts.items()}
    return AuditUpdate(message="QA feedback updated", charts=charts, chart_notes=notes, versions=versions)


def export_name(fmt: str, now: datetime) -> str:
    """audit-2026-12-05T1412Z-3fa9c1.csv: what, when (UTC, to the minute), a random part, format."""
    return f"audit-{now.astimezone(timezone.utc):%Y-%m-%dT%H%MZ}-{secrets.token_hex(3)}.{fmt}"


@safe(_audit_error)
def export_audit(svc: Services, username: str | None, q: AuditQuery, fmt: str) -> AuditUpdate:
    """Write the filtered trail to the private exports folder (role-checked; the export is itself an
    audit event) and hand back a download link only its maker and admins can use, for LINK_TTL."""
    actor = require_permission(svc, username, "export", "export the audit trail")
    require_screen(svc, username, "audit")
    if fmt not in FORMATS:
        raise Refused(f"choose one of {', '.join(FORMATS)}")
    f = audit_filter(svc, q)
    now = datetime.now(timezone.utc)
    target = svc.exports_dir / export_name(fmt, now)
    record = None
    try:
        with transaction(svc.factory) as s:
            record = write_export(s, target, fmt, actor=actor.name, filters=f)
            rows, export_id, path = record.row_count, record.id, record.path
    except BaseException:
        if record is not None:
            Path(record.path).unlink(missing_ok=True)
        raise
    return AuditUpdate(message=f"exported {rows} event(s) as {fmt.upper()}", kind="ok", file=path,
                       link=link_for(export_id, path, now=now))


@safe(_audit_error)
def verify_trail(svc: Services, username: str | None) -> AuditUpdate:
    require_permission(svc, username, "audit.read", "verify the audit trail")
    require_screen(svc, username, "audit")
    with svc.reader() as s:
        result = verify_chain(s)
    if result.ok:
        return AuditUpdate(message=f"✔ {result.message}", kind="ok")
    return AuditUpdate(message=f"✘ audit trail BROKEN at event {result.broken_seq}: {result.message}", kind="error")


def audit_choices(svc: Services) -> dict[str, list[str]]:
    """What the filters offer: actions, users, roles and templates."""
    with svc.reader() as s:
        return reports.audit_choices(s)
