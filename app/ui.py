"""build_ui(services) -> gr.Blocks: the page (header, one tab per screen, what loads with the
page) and the hardened launch settings. Layout and wiring only: each tab is built by its own
builder (app.ui_draft, ui_review, ui_audit, ui_admin), whose events call the screen's handlers.
"""

from __future__ import annotations

import html
from pathlib import Path
from typing import Any

import gradio as gr
from starlette.middleware import Middleware

from app import audit, draft
from app.auth import MUST_CHANGE, gradio_auth
from app.common import whoami
from app.export_links import export_route
from app.services import Services
from app.session_guard import SessionGuard
from app.state import DraftState, ReviewState
from app.ui_account import AccountTab
from app.ui_admin import AdminTab
from app.ui_audit import AuditTab
from app.ui_common import UNDOCUMENTED, user_of
from app.ui_draft import DraftTab, draft_outputs
from app.ui_review import ReviewTab

AUTH_MESSAGE = ("DiffDraft: log in with your user name and password. Wrong passwords make the next try wait; "
                "ten in a row lock the account for 15 minutes or until an admin unlocks it.")
# a page whose login session is gone (expired, logged out elsewhere, user disabled) learns it when
# Gradio refuses its next event with 401: it reloads, and the login form comes back
SESSION_LOST_JS = """<script>
(() => {
  const send = window.fetch.bind(window);
  window.fetch = async (...args) => {
    const answer = await send(...args);
    const url = String((args[0] && args[0].url) || args[0]);
    if (answer.status === 401 && url.includes("/gradio_api/queue/join")) window.location.reload();
    return answer;
  };
})();
</script>"""
NO_SCREEN = "You are logged in, but your role opens no screen. Ask an admin."
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
            account_tab = AccountTab(svc)
        screen_tabs = {"draft": draft_tab.tab, "review": review_tab.tab, "audit": audit_tab.tab, "admin": admin_tab.tab}
        no_access = gr.Markdown(NO_SCREEN, visible=False, elem_id="dd-no-access")

        def on_load(request: gr.Request) -> list[Any]:
            user = user_of(request)
            line, screens, must_change = whoami(svc, user)
            out: list[Any] = [f'<span class="dd-user">{html.escape(line)}</span>']
            out += [gr.update(visible=s in screens) for s in screen_tabs]
            out.append(gr.update(visible=bool(user)))
            note = MUST_CHANGE.format(name=user) if must_change else NO_SCREEN
            out.append(gr.update(visible=not screens, value=note))
            out.append(gr.update(choices=draft.template_choices(svc)) if "draft" in screens else gr.skip())
            if "audit" in screens:
                c = audit.audit_choices(svc)
                out += [gr.update(choices=c["users"]), gr.update(choices=c["roles"]),
                        gr.update(choices=c["actions"]), gr.update(choices=c["templates"])]
            else:
                out += [gr.skip()] * 4
            out.append(gr.Tabs(selected="password") if must_change else
                       gr.Tabs(selected=screens[0]) if screens else gr.skip())
            return out

        load_outputs = [who, *screen_tabs.values(), account_tab.tab, no_access, draft_tab.template, audit_tab.user,
                        audit_tab.role, audit_tab.action, audit_tab.template, tabs]
        demo.load(on_load, outputs=load_outputs, **UNDOCUMENTED)

        def restore(request: gr.Request) -> list[Any]:
            """The person's last open draft comes back (after a new login, a restart, on another
            replica); nothing for a role without the draft screen or a password still to change."""
            back = draft.come_back(svc, user_of(request))
            return draft_outputs(back) if back is not None else [gr.skip()] * len(draft_tab.outputs)

        demo.load(restore, outputs=draft_tab.outputs, api_visibility="private")

        def after_change(changed: bool, request: gr.Request) -> list[Any]:
            """A changed password opens the screens the role gives (the Password tab stays selected,
            showing that it worked); a refused change leaves the page as it is."""
            return on_load(request)[:-1] + [gr.skip()] if changed is True else [gr.skip()] * len(load_outputs)

        # the page's own follow-up of the Password tab's button (not an API)
        account_tab.changed.then(after_change, [account_tab.done], load_outputs, api_visibility="private")
    return demo


def launch_kwargs(svc: Services, *, host: str = "127.0.0.1", port: int | None = 7860) -> dict[str, Any]:
    """Blocks.launch arguments of a hardened server: no share link, no monitoring, no API page,
    no run history, a small upload limit, login against the storage users (throttled in the
    database), login sessions kept in the database and page sessions tied to their user
    (app.session_guard.SessionGuard). The exports folder is
    blocked for Gradio's file route; exports are fetched through the app's own route,
    `GET /exports/{token}` (app.export_links), which checks who is asking."""
    css = CSS_PATH.read_text(encoding="utf-8") if CSS_PATH.is_file() else None
    return dict(
        server_name=host,
        server_port=port,
        share=False,
        auth=gradio_auth(svc),
        auth_message=AUTH_MESSAGE,
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
        head=SESSION_LOST_JS,
        theme=gr.themes.Soft(primary_hue="indigo", neutral_hue="slate", font=["system-ui", "sans-serif"]),
        allowed_paths=[],
        blocked_paths=[str(svc.exports_dir)],
        app_kwargs={"routes": [export_route(svc)], "middleware": [Middleware(SessionGuard, svc=svc)]},
    )
