"""The Audit tab: layout and wiring only; the work is in app.audit."""

from __future__ import annotations

from typing import Any

import gradio as gr

from app import audit
from app.audit import AuditQuery
from app.services import Services
from app.ui_common import UNDOCUMENTED, keep, message, user_of


def _query(u: Any, r: Any, a: Any, d: Any, t: Any, s: Any, e: Any) -> AuditQuery:
    return AuditQuery(user=u or "", role=r or "", action=a or "", document=d, template=t or "", since=s or "",
                      until=e or "")


class AuditTab:
    """Lays out the Audit tab (inside the page's gr.Tabs) and wires its events to app.audit. The
    filter lists (users, roles, actions, templates) are filled when the page loads (app.ui)."""

    def __init__(self, svc: Services) -> None:
        self.svc = svc
        with gr.Tab("Audit", id="audit", visible=False) as self.tab:
            self.msg = gr.HTML("")
            with gr.Row():
                self.user = gr.Dropdown(label="User", choices=[], allow_custom_value=True, value=None)
                self.role = gr.Dropdown(label="Role", choices=[], value=None, allow_custom_value=True)
                self.action = gr.Dropdown(label="Action", choices=[], allow_custom_value=True, value=None)
                self.document = gr.Number(label="Document", precision=0, value=None)
                self.template = gr.Dropdown(label="Template", choices=[], value=None, allow_custom_value=True)
                self.since = gr.Textbox(label="From (YYYY-MM-DD)", max_length=32)
                self.until = gr.Textbox(label="Until (YYYY-MM-DD)", max_length=32)
            with gr.Row():
                self.apply_btn = gr.Button("Apply filters", size="sm", variant="primary")
                self.verify_btn = gr.Button("Verify trail", size="sm")
                self.fmt = gr.Radio(list(audit.FORMATS), value="csv", label="Export as", min_width=240)
                self.export_btn = gr.Button("Export", size="sm")
                self.export_file = gr.File(label="Export", interactive=False, height=60)
            self.verify_out = gr.HTML("")
            self.trail = gr.Dataframe(headers=audit.AUDIT_HEADERS, interactive=False, wrap=True, label="Audit trail",
                                      max_height=420)
            with gr.Row():
                self.chart_day = gr.BarPlot(x="day", y="events", title="Events per day", height=220)
                self.chart_tpl = gr.BarPlot(x="template", y="edits", title="Edits per template", height=220)
            with gr.Row():
                self.chart_term = gr.BarPlot(x="term", y="edits", title="Edits per term", height=220)
                self.chart_rate = gr.BarPlot(x="model", y="pins per run", title="Pin rate per model version",
                                             height=220)
        self.filters = [self.user, self.role, self.action, self.document, self.template, self.since, self.until]
        self._wire()

    def _wire(self) -> None:
        svc = self.svc
        outs = [self.msg, self.trail, self.chart_day, self.chart_tpl, self.chart_term, self.chart_rate]

        def do_audit_req(u: Any, r: Any, a: Any, d: Any, t: Any, s: Any, e: Any, request: gr.Request) -> list[Any]:
            up = audit.audit_table(svc, user_of(request), _query(u, r, a, d, t, s, e))
            c = audit.feedback_charts(svc, user_of(request)).charts or {}
            return [message(up.message, up.kind), keep(up.rows), c.get("per_day", gr.skip()),
                    c.get("per_template", gr.skip()), c.get("per_term", gr.skip()), c.get("pin_rate", gr.skip())]

        self.apply_btn.click(do_audit_req, self.filters, outs, api_name="audit_table", **UNDOCUMENTED)
        self.tab.select(do_audit_req, self.filters, outs, api_visibility="private")

        def do_export(u: Any, r: Any, a: Any, d: Any, t: Any, s: Any, e: Any, f: str,
                      request: gr.Request) -> list[Any]:
            up = audit.export_audit(svc, user_of(request), _query(u, r, a, d, t, s, e), f)
            return [message(up.message, up.kind), up.file]

        self.export_btn.click(do_export, self.filters + [self.fmt], [self.msg, self.export_file], api_name="export",
                              **UNDOCUMENTED)

        def do_verify(request: gr.Request) -> str:
            up = audit.verify_trail(svc, user_of(request))
            return message(up.message, up.kind)

        self.verify_btn.click(do_verify, None, self.verify_out, api_name="verify", **UNDOCUMENTED)
