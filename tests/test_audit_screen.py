"""The Audit screen's handlers (app.audit) and export links (app.export_links) as plain functions:
the document filter's empty states, the chart frames and their "no data" notes, export file names
and where the files live, and who may fetch an export link, for how long, each fetch audited."""

from __future__ import annotations

import re
from datetime import datetime, timedelta, timezone
from pathlib import Path

import gradio as gr
import pytest
from sqlalchemy import select

from app import audit, draft, export_links
from app.state import DraftState
from storage.models import AuditEvent

NAME = re.compile(r"audit-\d{4}-\d{2}-\d{2}T\d{4}Z-[0-9a-f]{6}\.(csv|xlsx|parquet|json)")


def a_run(svc) -> None:
    list(draft.generate(svc, "alice", DraftState(), template="Shift handover", length=None, steps=3, seed=1,
                        temperature=1.0))


def events(svc, action: str) -> list[AuditEvent]:
    with svc.reader() as s:
        return list(s.scalars(select(AuditEvent).where(AuditEvent.action == action).order_by(AuditEvent.seq)))


@pytest.mark.parametrize("empty", [None, "", 0, 0.0, "0"])
def test_an_empty_or_zero_document_filter_means_every_document(app_services, empty):
    a_run(app_services)
    everything = audit.audit_table(app_services, "maya", audit.AuditQuery())
    shown = audit.audit_table(app_services, "maya", audit.AuditQuery(document=empty))
    assert shown.kind != "error", shown.message
    assert shown.rows and shown.rows == everything.rows
    assert {r[6] for r in shown.rows} - {None}  # events of a document are among them


def test_a_document_filter_still_filters_and_checks_its_range(app_services):
    a_run(app_services)
    rows = audit.audit_table(app_services, "maya", audit.AuditQuery(document=1)).rows
    assert rows and all(r[6] == 1 for r in rows)
    bad = audit.audit_table(app_services, "maya", audit.AuditQuery(document=-3))
    assert bad.kind == "error" and "document must be between 1" in bad.message


def test_chart_frames_draw_categories_with_numbers_on_y(app_services):
    a_run(app_services)
    up = audit.feedback_charts(app_services, "maya")
    assert up.kind != "error", up.message
    axes = {"per_day": ("day", "events"), "per_template": ("template", "edits"), "per_term": ("term", "edits"),
            "pin_rate": ("model", "pins per run")}
    for name, (x, y) in axes.items():
        frame = up.charts[name]
        plotted = gr.BarPlot(x=x, y=y).postprocess(frame)
        # what the browser's chart is told: x as categories (one bar each), y as a quantity
        assert plotted.datatypes[x] == "nominal" and plotted.datatypes[y] == "quantitative", name
    assert len(up.charts["per_day"]) == 1 and up.chart_notes["per_day"] == ""
    assert len(up.charts["pin_rate"]) == 1 and up.charts["pin_rate"]["pins per run"].iloc[0] == 0.0
    # nobody pinned or edited: those charts are empty, said so, and still typed for the chart
    for name in ("per_template", "per_term"):
        assert len(up.charts[name]) == 0 and up.chart_notes[name].startswith(audit.NO_DATA)
        x, y = axes[name]
        assert gr.BarPlot(x=x, y=y).postprocess(up.charts[name]).datatypes[y] == "quantitative"


def test_chart_bars_start_at_zero(app_services):
    from app.ui import build_ui

    demo = build_ui(app_services)
    plots = [b for b in demo.blocks.values() if isinstance(b, gr.BarPlot)]
    assert len(plots) == 4
    # a y axis that starts at the smallest value draws that bar (and a lone bar) with no height
    assert all(p.y_lim is not None and p.y_lim[0] == 0 for p in plots)


def test_export_gets_a_dated_name_in_the_private_folder_and_a_link(app_services):
    svc = app_services
    a_run(svc)
    up = audit.export_audit(svc, "maya", audit.AuditQuery(), "json")
    assert up.kind == "ok", up.message
    path = Path(up.file)
    assert NAME.fullmatch(path.name), path.name
    assert path.parent == svc.exports_dir.resolve() and path.is_file()
    assert not list(svc.temp_dir.rglob("audit-*"))  # no copy where Gradio serves files from
    link = up.link
    assert link.filename == path.name and link.url == f"exports/{link.token}"
    now = datetime.now(timezone.utc)
    assert timedelta(minutes=14) < link.expires - now <= export_links.LINK_TTL
    assert export_links.read_token(link.token)[1] == link.expires


def test_the_maker_and_admins_may_fetch_an_export_and_each_fetch_is_audited(app_services):
    svc = app_services
    up = audit.export_audit(svc, "maya", audit.AuditQuery(), "csv")
    got = export_links.download_export(svc, "maya", up.link.token)
    assert got.status == 200 and got.path == Path(up.file) and got.filename == Path(up.file).name
    assert export_links.download_export(svc, "adam", up.link.token).status == 200
    done = events(svc, "export.download")
    assert [(e.actor, e.role) for e in done] == [("maya", "manager"), ("adam", "admin")]
    assert all(Path(up.file).name in e.new_value for e in done)


@pytest.mark.parametrize(("user", "status", "words"), [
    ("olga", 403, "only the manager who made"),
    ("alice", 403, "only the manager who made"),
    (None, 401, "log in"),
    ("nobody", 401, "log in"),
])
def test_others_are_refused_and_the_refusal_is_audited(app_services, user, status, words):
    svc = app_services
    up = audit.export_audit(svc, "maya", audit.AuditQuery(), "csv")
    got = export_links.download_export(svc, user, up.link.token)
    assert (got.status, got.path) == (status, None) and words in got.message
    refused = events(svc, "export.download.refused")
    assert len(refused) == 1 and refused[0].object_id == str(export_links.read_token(up.link.token)[0])
    assert events(svc, "export.download") == []


def test_an_expired_link_is_gone(app_services):
    svc = app_services
    up = audit.export_audit(svc, "maya", audit.AuditQuery(), "csv")
    later = up.link.expires + timedelta(seconds=1)
    got = export_links.download_export(svc, "maya", up.link.token, now=later)
    assert got.status == 410 and "expired" in got.message
    assert events(svc, "export.download.refused")[0].reason.startswith("this export link has expired")
    old = export_links.make_token(export_links.read_token(up.link.token)[0], datetime.now(timezone.utc)
                                  - timedelta(minutes=1))
    assert export_links.download_export(svc, "maya", old).status == 410


def test_a_removed_file_is_gone(app_services):
    svc = app_services
    up = audit.export_audit(svc, "maya", audit.AuditQuery(), "csv")
    Path(up.file).unlink()
    assert export_links.download_export(svc, "maya", up.link.token).status == 410


@pytest.mark.parametrize("change", ["id", "expiry", "signature", "junk"])
def test_an_altered_or_made_up_token_finds_nothing(app_services, change):
    svc = app_services
    up = audit.export_audit(svc, "maya", audit.AuditQuery(), "csv")
    export_id, stamp, sig = up.link.token.split(".")
    token = {"id": f"{int(export_id) + 1}.{stamp}.{sig}", "expiry": f"{export_id}.{int(stamp) + 3600}.{sig}",
             "signature": f"{export_id}.{stamp}.{'0' * 32}", "junk": "../../diffdraft.sqlite3"}[change]
    got = export_links.download_export(svc, "maya", token)
    assert (got.status, got.path) == (404, None)
    assert events(svc, "export.download") == [] and events(svc, "export.download.refused") == []


def test_the_export_link_on_the_screen_names_the_file_and_the_time_limit(app_services):
    from app.ui_audit import export_link_html

    up = audit.export_audit(app_services, "maya", audit.AuditQuery(), "parquet")
    page = export_link_html(up.link)
    name = Path(up.file).name
    assert f'href="exports/{up.link.token}"' in page and f'download="{name}"' in page and f"⤓ {name}" in page
    assert "15 minutes" in page and f"{up.link.expires:%H:%M} UTC" in page
    assert export_link_html(None) == ""
