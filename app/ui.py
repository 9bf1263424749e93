"""build_ui(services) -> gr.Blocks: the page (header, one tab per screen, what loads with the
page) and the hardened launch settings. Layout and wiring only: each tab is built by its own
builder (app.ui_draft, ui_review, ui_audit, ui_admin), whose events call the screen's handlers.
"""

from __future__ import annotations

import html
from pathlib import Path
from typing import Any

import gradio as gr

from app import audit, draft
from app.auth import gradio_auth
from app.common import whoami
from app.export_links import export_route
from app.services import Services
from app.state import DraftState, ReviewState
from app.ui_admin import AdminTab
from app.ui_audit import AuditTab
from app.ui_common import UNDOCUMENTED, user_of
from app.ui_draft import DraftTab, draft_outputs
from app.ui_review import ReviewTab

CSS_PATH = Path(__file__).resolve().parent.parent / "assets" / "app.css"


def build_ui(svc: Services) -> gr.Blocks:
    """The Blocks of the app (not launched). Reads the template names; per-user content loads with the page."""
    with gr.Blocks(title="DiffDraft", analytics_enabled=False, delete_cache=(3600, 3600)) as demo:
        draft_state = gr.State(DraftState())
        review_state = gr.State(ReviewState())
        with gr.Row(elem_classes="dd-header"):
            gr.HTML('<div class="dd-brand"><span class="dd-logo">◧</span> DiffDraft '
                    '<span class="dd-sub">report drafting with a diffusion model</span></div>')
            who = gr.HTML("", elem_classes="dd-who")
            gr.HTML('<a class="dd-logout" href="/logout">Log out</a>')
        with gr.Tabs() as tabs:
            draft_tab = DraftTab(svc, draft_state, draft.template_choices(svc))
            review_tab = ReviewTab(svc, review_state)
            audit_tab = AuditTab(svc)
            admin_tab = AdminTab(svc)
        screen_tabs = {"draft": draft_tab.tab, "review": review_tab.tab, "audit": audit_tab.tab, "admin": admin_tab.tab}
        no_access = gr.Markdown("You are logged in, but your role opens no screen. Ask an admin.", visible=False)

        def on_load(request: gr.Request) -> list[Any]:
            line, screens = whoami(svc, user_of(request))
            out: list[Any] = [f'<span class="dd-user">{html.escape(line)}</span>']
            out += [gr.update(visible=s in screens) for s in screen_tabs]
            out.append(gr.update(visible=not screens))
            out.append(gr.update(choices=draft.template_choices(svc)) if "draft" in screens else gr.skip())
            if "audit" in screens:
                c = audit.audit_choices(svc)
                out += [gr.update(choices=c["users"]), gr.update(choices=c["roles"]),
                        gr.update(choices=c["actions"]), gr.update(choices=c["templates"])]
            else:
                out += [gr.skip()] * 4
            out.append(gr.Tabs(selected=screens[0]) if screens else gr.skip())
            # the person's last open draft comes back (after a new login, a restart, on another replica)
            back = draft.come_back(svc, user_of(request)) if "draft" in screens else None
            out += draft_outputs(back) if back is not None else [gr.skip()] * len(draft_tab.outputs)
            return out

        demo.load(on_load, outputs=[who, *screen_tabs.values(), no_access, draft_tab.template, audit_tab.user,
                                    audit_tab.role, audit_tab.action, audit_tab.template, tabs, *draft_tab.outputs],
                  **UNDOCUMENTED)
    return demo


def launch_kwargs(svc: Services, *, host: str = "127.0.0.1", port: int | None = 7860) -> dict[str, Any]:
    """Blocks.launch arguments of a hardened server: no share link, no monitoring, no API page,
    no run history, a small upload limit, login against the storage users. The exports folder is
    blocked for Gradio's file route; exports are fetched through the app's own route,
    `GET /exports/{token}` (app.export_links), which checks who is asking."""
    css = CSS_PATH.read_text(encoding="utf-8") if CSS_PATH.is_file() else None
    return dict(
        server_name=host,
        server_port=port,
        share=False,
        auth=gradio_auth(svc),
        auth_message="DiffDraft: log in with your user name and password.",
        show_error=False,
        footer_links=[],
        run_history=False,
        enable_monitoring=False,
        max_file_size="1mb",
        # a thread per streaming draft (waiting for its batched step) and room for the clicks beside them
        max_threads=svc.limits.active_drafts + 24,
        ssr_mode=False,
        mcp_server=False,
        pwa=False,
        quiet=True,
        css=css,
        theme=gr.themes.Soft(primary_hue="indigo", neutral_hue="slate", font=["system-ui", "sans-serif"]),
        allowed_paths=[],
        blocked_paths=[str(svc.exports_dir)],
        app_kwargs={"routes": [export_route(svc)]},
    )
