"""The Audit tab: layout and wiring only; the work is in app.audit."""

from __future__ import annotations

import html
from typing import Any

import gradio as gr

from app import audit
from app.audit import AuditQuery
from app.export_links import LINK_TTL, Link
from app.services import Services
from app.ui_common import UNDOCUMENTED, keep, message, user_of

# the trail's columns (audit.AUDIT_HEADERS), in pixels: 1360 in all, the page's width less its padding
TRAIL_WIDTHS = [60, 150, 90, 90, 130, 110, 95, 95, 200, 200, 140]
CHARTS = ("per_day", "per_template", "per_term", "pin_rate")


def export_link_html(link: Link | None) -> str:
    """The export's download link, its file name and how long it works; "" without a link."""
    if link is None:
        return ""
    name = html.escape(link.filename)
    minutes = int(LINK_TTL.total_seconds() // 60)
    return (f'<div class="dd-export-link"><a href="{html.escape(link.url)}" download="{name}">⤓ {name}</a> '
            f'<span class="dd-export-note">works for {minutes} minutes (until {link.expires:%H:%M} UTC), '
            'for you and admins only</span></div>')


def _chart(frame: Any, note: str | None) -> Any:
    """A chart's update: its frame, and under it the note that says it has no data (if so)."""
    return gr.BarPlot(value=frame, caption=note or None)


def _query(u: Any, r: Any, a: Any, d: Any, t: Any, s: Any, e: Any) -> AuditQuery:
    return AuditQuery(user=u or "", role=r or "", action=a or "", document=d, template=t or "", since=s or "",
                      until=e or "")


class AuditTab:
    """Lays out the Audit tab (inside the page's gr.Tabs) and wires its events to app.audit. The
    filter lists (users, roles, actions, templates) are filled when the page loads (app.ui)."""

    def __init__(self, svc: Services) -> None:
        self.svc = svc
        with gr.Tab("Audit", id="audit", visible=False, elem_id="dd-audit") as self.tab:
            self.msg = gr.HTML("")
            with gr.Row():
                self.user = gr.Dropdown(label="User", choices=[], allow_custom_value=True, value=None)
                self.role = gr.Dropdown(label="Role", choices=[], value=None, allow_custom_value=True)
                self.action = gr.Dropdown(label="Action", choices=[], allow_custom_value=True, value=None)
                # a textbox, not a gr.Number: a number field shows (and sends) 0 when it has no value
                self.document = gr.Textbox(label="Document", placeholder="all (or a document id)", max_length=20)
                self.template = gr.Dropdown(label="Template", choices=[], value=None, allow_custom_value=True)
                self.since = gr.Textbox(label="From (YYYY-MM-DD)", max_length=32)
                self.until = gr.Textbox(label="Until (YYYY-MM-DD)", max_length=32)
            with gr.Row():
                self.apply_btn = gr.Button("Apply filters", size="sm", variant="primary")
                self.verify_btn = gr.Button("Verify trail", size="sm")
                self.fmt = gr.Radio(list(audit.FORMATS), value="csv", label="Export as", min_width=240)
                self.export_btn = gr.Button("Export", size="sm", elem_id="dd-audit-export-btn")
            minutes = int(LINK_TTL.total_seconds() // 60)
            self.export_link = gr.HTML(f'<span class="dd-export-note">An export is a file for you (and admins) '
                                       f'only; its link works for {minutes} minutes.</span>',
                                       elem_id="dd-audit-export")
            self.verify_out = gr.HTML("")
            self.trail = gr.Dataframe(headers=audit.AUDIT_HEADERS, interactive=False, wrap=True, label="Audit trail",
                                      max_height=420, column_widths=TRAIL_WIDTHS, elem_id="dd-audit-trail")
            bars = dict(height=220, y_lim=[0, None], elem_classes="dd-audit-chart")
            with gr.Row():
                self.chart_day = gr.BarPlot(x="day", y="events", title="Events per day", sort="x",
                                            elem_id="dd-chart-day", **bars)
                self.chart_tpl = gr.BarPlot(x="template", y="edits", title="Edits per template", sort="-y",
                                            elem_id="dd-chart-template", **bars)
            with gr.Row():
                self.chart_term = gr.BarPlot(x="term", y="edits", title="Edits per term", sort="-y",
                                             elem_id="dd-chart-term", **bars)
                self.chart_rate = gr.BarPlot(x="model", y="pins per run", title="Pin rate per model version",
                                             sort="-y", elem_id="dd-chart-rate", **bars)
            self.versions = gr.Dataframe(headers=audit.VERSION_HEADERS, interactive=False, wrap=True,
                                         label="Model versions compared (a draft counts for its newest run's model)",
                                         elem_id="dd-audit-versions")
        self.filters = [self.user, self.role, self.action, self.document, self.template, self.since, self.until]
        self._wire()

    def _wire(self) -> None:
        svc = self.svc
        outs = [self.msg, self.trail, self.chart_day, self.chart_tpl, self.chart_term, self.chart_rate, self.versions]

        def do_audit_req(u: Any, r: Any, a: Any, d: Any, t: Any, s: Any, e: Any, request: gr.Request) -> list[Any]:
            up = audit.audit_table(svc, user_of(request), _query(u, r, a, d, t, s, e))
            fb = audit.feedback_charts(svc, user_of(request))
            charts, notes = fb.charts or {}, fb.chart_notes or {}
            return [message(up.message, up.kind), keep(up.rows),
                    *(_chart(charts[c], notes.get(c)) if c in charts else gr.skip() for c in CHARTS), keep(fb.versions)]

        self.apply_btn.click(do_audit_req, self.filters, outs, api_name="audit_table", **UNDOCUMENTED)
        self.tab.select(do_audit_req, self.filters, outs, api_visibility="private")

        def do_export(u: Any, r: Any, a: Any, d: Any, t: Any, s: Any, e: Any, f: str,
                      request: gr.Request) -> list[Any]:
            up = audit.export_audit(svc, user_of(request), _query(u, r, a, d, t, s, e), f)
            return [message(up.message, up.kind), export_link_html(up.link)]

        self.export_btn.click(do_export, self.filters + [self.fmt], [self.msg, self.export_link], api_name="export",
                              **UNDOCUMENTED)

        def do_verify(request: gr.Request) -> str:
            up = audit.verify_trail(svc, user_of(request))
            return message(up.message, up.kind)

        self.verify_btn.click(do_verify, None, self.verify_out, api_name="verify", **UNDOCUMENTED)
