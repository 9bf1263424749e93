"""The Audit screen's handlers (app.audit) as plain functions: the document filter's empty states,
the chart frames and their "no data" notes."""

from __future__ import annotations

import gradio as gr
import pytest

from app import audit, draft
from app.state import DraftState


def a_run(svc) -> None:
    list(draft.generate(svc, "alice", DraftState(), template="Shift handover", length=None, steps=3, seed=1,
                        temperature=1.0))


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
