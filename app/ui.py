"""build_ui(services) -> gr.Blocks: layout and wiring only; the work is in app.handlers.

The draft view is a gr.HTML whose value is JSON (app.render.draft_payload). Its template is
static markup; the script in TOKEN_JS builds one <span data-pos> per token with textContent (model
text is never parsed as HTML), and sends the page's acts back as custom events: "pin" (a click on
a token, with its position) and "select_span" (a selection of tokens, with start and end).
Every listener passes request.username to its handler, which checks the role on the server.
"""

from __future__ import annotations

import html
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import gradio as gr

from app import handlers as h
from app import render
from app.handlers import AuditQuery, DraftUpdate
from app.state import DraftState, ReviewState

CSS_PATH = Path(__file__).resolve().parent.parent / "assets" / "app.css"

TOKEN_TEMPLATE = '<div class="dd-view"><div class="dd-caption"></div><div class="dd-tokens" aria-label="draft"></div></div>'

TOKEN_JS = r"""
const FLAG = {p: 'pinned', m: 'template', e: 'edited', c: 'changed', s: 'special'};
function draw() {
  const v = props.value || {};
  const root = element.querySelector('.dd-tokens');
  const cap = element.querySelector('.dd-caption');
  if (!root) return;
  const frag = document.createDocumentFragment();
  for (const c of (v.cells || [])) {
    const s = document.createElement('span');
    let cls = 'tok c' + (c.l | 0);
    for (const f of String(c.k || '')) { if (FLAG[f]) cls += ' ' + FLAG[f]; }
    s.className = cls;
    s.dataset.pos = String(c.i | 0);
    s.textContent = String(c.t);
    frag.appendChild(s);
  }
  root.replaceChildren(frag);
  if (cap) cap.textContent = String(v.caption || '');
}
function posOf(node) {
  let n = node && node.nodeType === 3 ? node.parentElement : node;
  while (n && n !== element && !(n.dataset && n.dataset.pos !== undefined)) n = n.parentElement;
  return n && n !== element ? Number(n.dataset.pos) : null;
}
element.addEventListener('mouseup', () => {
  const sel = window.getSelection();
  if (!sel || sel.isCollapsed) return;
  const a = posOf(sel.anchorNode), b = posOf(sel.focusNode);
  if (a === null || b === null) return;
  trigger('select_span', {start: Math.min(a, b), end: Math.max(a, b) + 1});
});
element.addEventListener('click', (ev) => {
  const sel = window.getSelection();
  if (sel && !sel.isCollapsed) return;
  const s = ev.target.closest ? ev.target.closest('span[data-pos]') : null;
  if (!s || !element.contains(s)) return;
  trigger('pin', {pos: Number(s.dataset.pos)});
});
draw();
watch('value', draw);
"""

LEGEND = (
    '<div class="dd-legend">'
    '<span class="tok c0">low</span><span class="tok c1">·</span><span class="tok c2">·</span>'
    '<span class="tok c3">·</span><span class="tok c4">high</span> confidence &nbsp; '
    '<span class="tok c4 pinned">pinned</span> <span class="tok c4 template">template</span> '
    '<span class="tok c4 edited">edited</span> <span class="tok c2 changed">changed this step</span>'
    '</div>'
)

HELP = (
    "Click a token to pin or unpin it. Select tokens with the mouse to fill the span below, type a "
    "replacement of any length and press Replace. Lock term pins every occurrence of a phrase. "
    "All of it works while the draft streams (in effect from the next step) or while it is paused."
)


def _user(request: gr.Request | None) -> str | None:
    return getattr(request, "username", None) if request is not None else None


def _draft_outputs(up: DraftUpdate) -> list[Any]:
    msg = render.message_html(up.message, up.kind) if up.message else gr.skip()
    view = up.payload if up.payload is not None else gr.skip()
    slider = (gr.update(value=up.step, maximum=max(1, up.total or 1)) if up.step is not None else gr.skip())
    state = up.state if up.state is not None else gr.skip()
    if up.runs is not None:
        current = next((v for _, v in up.runs if up.state is not None and v == up.state.run_id), None)
        runs = gr.update(choices=up.runs, value=current)
    else:
        runs = gr.skip()
    text = up.text if up.text is not None else gr.skip()
    return [msg, view, slider, state, runs, text]


def _msg(text: str, kind: str) -> str:
    return render.message_html(text, kind)


def build_ui(svc: Any) -> gr.Blocks:
    """The Blocks of the app (not launched). Reads the template names; per-user content loads with the page."""
    tpl_choices = h.template_choices(svc)
    with gr.Blocks(title="DiffDraft", analytics_enabled=False, delete_cache=(3600, 3600)) as demo:
        draft_state = gr.State(DraftState())
        review_state = gr.State(ReviewState())
        with gr.Row(elem_classes="dd-header"):
            gr.HTML('<div class="dd-brand"><span class="dd-logo">◧</span> DiffDraft '
                    '<span class="dd-sub">report drafting with a diffusion model</span></div>')
            who = gr.HTML("", elem_classes="dd-who")
            gr.HTML('<a class="dd-logout" href="/logout">Log out</a>')
        with gr.Tabs() as tabs:
            # ---------------------------------------------------------------- draft
            with gr.Tab("Draft", id="draft", visible=False) as tab_draft:
                with gr.Row(equal_height=False):
                    with gr.Column(scale=1, min_width=260, elem_classes="dd-panel"):
                        template = gr.Dropdown(label="Template", choices=tpl_choices, value=tpl_choices[-1],
                                               allow_custom_value=True)
                        length = gr.Number(label="Length (tokens, free length only)", value=64, precision=0,
                                           minimum=1, maximum=svc.limits.max_length)
                        steps = gr.Slider(label="Steps", minimum=1, maximum=256, step=1,
                                          value=svc.ckpt.sampler_cfg.steps)
                        with gr.Row():
                            seed = gr.Number(label="Seed", value=0, precision=0, minimum=0)
                            temperature = gr.Slider(label="Temperature", minimum=0.1, maximum=2.0, step=0.05,
                                                    value=float(svc.ckpt.sampler_cfg.temperature or 1.0))
                        title = gr.Textbox(label="Title (optional)", max_length=200)
                        generate_btn = gr.Button("Generate", variant="primary", elem_id="dd-generate")
                        with gr.Row():
                            pause_btn = gr.Button("Pause", elem_id="dd-pause", size="sm")
                            resume_btn = gr.Button("Resume", elem_id="dd-resume", size="sm")
                        runs = gr.Dropdown(label="Runs of this document (branches)", choices=[], value=None,
                                           interactive=True)
                        reopen_btn = gr.Button("Reopen run", size="sm")
                    with gr.Column(scale=3, elem_classes="dd-main"):
                        draft_msg = gr.HTML("", elem_id="dd-draft-msg")
                        view = gr.HTML(render.EMPTY_PAYLOAD, html_template=TOKEN_TEMPLATE, js_on_load=TOKEN_JS,
                                       elem_id="dd-view", apply_default_css=False)
                        step_slider = gr.Slider(label="Step (drag to go back; pause first to branch)", minimum=0,
                                                maximum=1, step=1, value=0, elem_id="dd-step")
                        gr.HTML(LEGEND)
                        gr.Markdown(HELP, elem_classes="dd-help")
                        with gr.Row(elem_classes="dd-steer"):
                            span_start = gr.Number(label="Span start", precision=0, value=0, min_width=90,
                                                   elem_id="dd-span-start")
                            span_end = gr.Number(label="Span end (excl.)", precision=0, value=0, min_width=90,
                                                 elem_id="dd-span-end")
                            replacement = gr.Textbox(label="Replacement", scale=3, elem_id="dd-replacement",
                                                     max_length=svc.limits.max_edit_chars)
                            edit_reason = gr.Textbox(label="Reason", scale=2, placeholder="correction",
                                                     max_length=500)
                        with gr.Row():
                            replace_btn = gr.Button("Replace span", size="sm", elem_id="dd-replace")
                            pin_span_btn = gr.Button("Pin span", size="sm")
                            term = gr.Textbox(label="Term", show_label=False, placeholder="term to lock, e.g. "
                                              "hydraulic pump", scale=2, max_length=svc.limits.max_term_chars)
                            lock_btn = gr.Button("Lock term", size="sm")
                        with gr.Row(elem_classes="dd-finish"):
                            accept_btn = gr.Button("Accept", variant="primary", size="sm", elem_id="dd-accept")
                            reject_reason = gr.Textbox(show_label=False, placeholder="reason for rejecting", scale=2,
                                                       max_length=2000)
                            reject_btn = gr.Button("Reject", variant="stop", size="sm")
                            discard_btn = gr.Button("Discard", size="sm")
                        with gr.Row():
                            fmt = gr.Radio(["md", "txt"], value="md", label="Download as", min_width=160)
                            download_btn = gr.Button("Download", size="sm")
                            download_file = gr.File(label="File", interactive=False, height=60)
                        with gr.Accordion("Plain text", open=False):
                            plain = gr.Textbox(show_label=False, lines=8, interactive=False, elem_id="dd-plain")

            # ---------------------------------------------------------------- review
            with gr.Tab("Review", id="review", visible=False) as tab_review:
                review_msg = gr.HTML("")
                with gr.Row():
                    queue = gr.Dataframe(headers=h.QUEUE_HEADERS, interactive=False, wrap=True, label="Awaiting review")
                with gr.Row():
                    refresh_queue = gr.Button("Refresh", size="sm")
                    review_doc = gr.Number(label="Document", precision=0, minimum=1)
                    open_btn = gr.Button("Open", size="sm")
                doc_view = gr.HTML("")
                with gr.Accordion("History", open=False):
                    history = gr.HTML("")
                with gr.Row():
                    decision = gr.Radio(["approve", "reject"], value="approve", label="Decision")
                    review_reason = gr.Textbox(label="Reason (required to reject)", scale=2, max_length=2000)
                    password = gr.Textbox(label="Password (signs the decision)", type="password")
                gr.Markdown("**Meaning of the signature.** Approve: *" + h.SIGNATURE_MEANINGS["approve"] +
                            "* Reject: *" + h.SIGNATURE_MEANINGS["reject"] + "*")
                sign_btn = gr.Button("Sign", variant="primary")

            # ---------------------------------------------------------------- audit
            with gr.Tab("Audit", id="audit", visible=False) as tab_audit:
                audit_msg = gr.HTML("")
                with gr.Row():
                    f_user = gr.Dropdown(label="User", choices=[], allow_custom_value=True, value=None)
                    f_role = gr.Dropdown(label="Role", choices=[], value=None, allow_custom_value=True)
                    f_action = gr.Dropdown(label="Action", choices=[], allow_custom_value=True, value=None)
                    f_doc = gr.Number(label="Document", precision=0, value=None)
                    f_template = gr.Dropdown(label="Template", choices=[], value=None, allow_custom_value=True)
                    f_since = gr.Textbox(label="From (YYYY-MM-DD)", max_length=32)
                    f_until = gr.Textbox(label="Until (YYYY-MM-DD)", max_length=32)
                with gr.Row():
                    apply_btn = gr.Button("Apply filters", size="sm", variant="primary")
                    verify_btn = gr.Button("Verify trail", size="sm")
                    exp_fmt = gr.Radio(list(h.FORMATS), value="csv", label="Export as", min_width=240)
                    export_btn = gr.Button("Export", size="sm")
                    export_file = gr.File(label="Export", interactive=False, height=60)
                verify_out = gr.HTML("")
                trail = gr.Dataframe(headers=h.AUDIT_HEADERS, interactive=False, wrap=True, label="Audit trail",
                                     max_height=420)
                with gr.Row():
                    chart_day = gr.BarPlot(x="day", y="events", title="Events per day", height=220)
                    chart_tpl = gr.BarPlot(x="template", y="edits", title="Edits per template", height=220)
                with gr.Row():
                    chart_term = gr.BarPlot(x="term", y="edits", title="Edits per term", height=220)
                    chart_rate = gr.BarPlot(x="model", y="pins per run", title="Pin rate per model version",
                                            height=220)

            # ---------------------------------------------------------------- admin
            with gr.Tab("Admin", id="admin", visible=False) as tab_admin:
                admin_msg = gr.HTML("")
                users = gr.Dataframe(headers=h.USER_HEADERS, interactive=False, label="Users")
                with gr.Row():
                    u_name = gr.Textbox(label="User", max_length=64)
                    u_role = gr.Dropdown(["operator", "reviewer", "manager", "admin"], value="operator", label="Role")
                    u_password = gr.Textbox(label="Password (new users)", type="password")
                    u_reason = gr.Textbox(label="Reason (role changes, disabling)", max_length=500)
                with gr.Row():
                    add_btn = gr.Button("Add user", size="sm", variant="primary")
                    role_btn = gr.Button("Change role", size="sm")
                    disable_btn = gr.Button("Disable", size="sm")
                    enable_btn = gr.Button("Enable", size="sm")
        no_access = gr.Markdown("You are logged in, but your role opens no screen. Ask an admin.", visible=False)

        # ================================================================ wiring
        draft_outs = [draft_msg, view, step_slider, draft_state, runs, plain]
        private = {"api_visibility": "undocumented"}

        def on_load(request: gr.Request) -> list[Any]:
            user = _user(request)
            line, screens = h.whoami(svc, user)
            out: list[Any] = [f'<span class="dd-user">{html.escape(line)}</span>']
            out += [gr.update(visible=s in screens) for s in ("draft", "review", "audit", "admin")]
            out.append(gr.update(visible=not screens))
            out.append(gr.update(choices=h.template_choices(svc)) if "draft" in screens else gr.skip())
            if "audit" in screens:
                c = h.audit_choices(svc)
                out += [gr.update(choices=c["users"]), gr.update(choices=c["roles"]),
                        gr.update(choices=c["actions"]), gr.update(choices=c["templates"])]
            else:
                out += [gr.skip()] * 4
            out.append(gr.Tabs(selected=screens[0]) if screens else gr.skip())
            return out

        demo.load(on_load, outputs=[who, tab_draft, tab_review, tab_audit, tab_admin, no_access, template, f_user,
                                    f_role, f_action, f_template, tabs], **private)

        def do_generate(state: DraftState, tpl: str, n: Any, k: Any, sd: Any, temp: Any, ttl: str,
                        request: gr.Request) -> Iterator[list[Any]]:
            for up in h.generate(svc, _user(request), state, template=tpl, length=n, steps=k, seed=sd,
                                 temperature=temp, title=ttl):
                yield _draft_outputs(up)

        generate_btn.click(do_generate, [draft_state, template, length, steps, seed, temperature, title], draft_outs,
                           api_name="generate", concurrency_limit=2, concurrency_id="model",
                           show_progress="hidden", **private)

        def do_resume(state: DraftState, request: gr.Request) -> Iterator[list[Any]]:
            for up in h.resume(svc, _user(request), state):
                yield _draft_outputs(up)

        resume_btn.click(do_resume, [draft_state], draft_outs, api_name="resume", concurrency_limit=2,
                         concurrency_id="model", show_progress="hidden", **private)

        def do_pause(state: DraftState, request: gr.Request) -> list[Any]:
            return _draft_outputs(h.pause(svc, _user(request), state))

        pause_btn.click(do_pause, [draft_state], draft_outs, api_name="pause", concurrency_limit=None,
                        show_progress="hidden", **private)

        def do_click_pin(state: DraftState, evt: gr.EventData, request: gr.Request) -> list[Any]:
            pos = (getattr(evt, "_data", None) or {}).get("pos")
            return _draft_outputs(h.toggle_pin(svc, _user(request), state, pos))

        view.pin(do_click_pin, [draft_state], draft_outs, api_name="click_pin", concurrency_limit=None,
                 show_progress="hidden", **private)

        def do_toggle(state: DraftState, pos: Any, request: gr.Request) -> list[Any]:
            return _draft_outputs(h.toggle_pin(svc, _user(request), state, pos))

        # the same act as a click, by position, for keyboards and API clients
        toggle_pos = gr.Number(visible=False, precision=0)
        toggle_pos.change(do_toggle, [draft_state, toggle_pos], draft_outs, api_name="toggle_pin",
                          concurrency_limit=None, show_progress="hidden", **private)

        def do_select(state: DraftState, evt: gr.EventData, request: gr.Request) -> list[Any]:
            data = getattr(evt, "_data", None) or {}
            a, b = data.get("start"), data.get("end")
            text = ""
            ctrl = svc.runs.get(state.run_id if state else None)
            if ctrl is not None and ctrl.base is not None and isinstance(a, int) and isinstance(b, int) \
                    and 0 <= a < b <= ctrl.base.length:
                text = svc.tokenizer.decode(ctrl.base.tokens[a:b].tolist())
            return [a, b, text]

        view.select_span(do_select, [draft_state], [span_start, span_end, replacement], concurrency_limit=None,
                         show_progress="hidden", api_visibility="private")

        def do_pin_span(state: DraftState, a: Any, b: Any, request: gr.Request) -> list[Any]:
            return _draft_outputs(h.pin_span(svc, _user(request), state, a, b))

        pin_span_btn.click(do_pin_span, [draft_state, span_start, span_end], draft_outs, api_name="pin_span",
                           concurrency_limit=None, show_progress="hidden", **private)

        def do_edit(state: DraftState, a: Any, b: Any, text: str, reason: str, request: gr.Request) -> list[Any]:
            return _draft_outputs(h.edit_span(svc, _user(request), state, a, b, text, reason))

        replace_btn.click(do_edit, [draft_state, span_start, span_end, replacement, edit_reason], draft_outs,
                          api_name="edit_span", concurrency_limit=None, show_progress="hidden", **private)

        def do_lock(state: DraftState, t: str, request: gr.Request) -> list[Any]:
            return _draft_outputs(h.lock_term(svc, _user(request), state, t))

        lock_btn.click(do_lock, [draft_state, term], draft_outs, api_name="lock_term", concurrency_limit=None,
                       show_progress="hidden", **private)

        def do_view_step(state: DraftState, k: Any, request: gr.Request) -> list[Any]:
            return _draft_outputs(h.view_step(svc, _user(request), state, k))

        step_slider.release(do_view_step, [draft_state, step_slider], draft_outs, api_name="view_step",
                            concurrency_limit=None, show_progress="hidden", **private)

        def do_reopen(state: DraftState, run_id: Any, request: gr.Request) -> list[Any]:
            return _draft_outputs(h.open_run(svc, _user(request), state, run_id))

        reopen_btn.click(do_reopen, [draft_state, runs], draft_outs, api_name="open_run", **private)

        def do_accept(state: DraftState, request: gr.Request) -> list[Any]:
            return _draft_outputs(h.accept(svc, _user(request), state))

        accept_btn.click(do_accept, [draft_state], draft_outs, api_name="accept", **private)

        def do_reject(state: DraftState, reason: str, request: gr.Request) -> list[Any]:
            return _draft_outputs(h.reject(svc, _user(request), state, reason))

        reject_btn.click(do_reject, [draft_state, reject_reason], draft_outs, api_name="reject", **private)

        def do_discard(state: DraftState, request: gr.Request) -> list[Any]:
            return _draft_outputs(h.discard(svc, _user(request), state))

        discard_btn.click(do_discard, [draft_state], draft_outs, api_name="discard", **private)

        def do_download(state: DraftState, f: str, request: gr.Request) -> list[Any]:
            path, message = h.download(svc, _user(request), state, f)
            return [_msg(message, "ok" if path else "error"), path]

        download_btn.click(do_download, [draft_state, fmt], [draft_msg, download_file], api_name="download", **private)

        # ---------------------------------------------------------------- review wiring
        def review_outputs(up: h.ReviewUpdate) -> list[Any]:
            return [_msg(up.message, up.kind) if up.message else gr.skip(),
                    up.queue if up.queue is not None else gr.skip(),
                    up.document_html if up.document_html is not None else gr.skip(),
                    up.history_html if up.history_html is not None else gr.skip(),
                    up.state if up.state is not None else gr.skip()]

        review_outs = [review_msg, queue, doc_view, history, review_state]

        def do_queue(request: gr.Request) -> list[Any]:
            return review_outputs(h.review_queue(svc, _user(request)))

        refresh_queue.click(do_queue, None, review_outs, api_name="review_queue", **private)
        tab_review.select(do_queue, None, review_outs, api_visibility="private")

        def do_open(doc_id: Any, request: gr.Request) -> list[Any]:
            return review_outputs(h.open_review(svc, _user(request), doc_id))

        open_btn.click(do_open, [review_doc], review_outs, api_name="open_review", **private)

        def do_pick(evt: gr.SelectData, request: gr.Request) -> list[Any]:
            row = evt.row_value or []
            doc_id = row[0] if row else None
            return [doc_id] + review_outputs(h.open_review(svc, _user(request), doc_id))

        queue.select(do_pick, None, [review_doc] + review_outs, api_visibility="private")

        def do_sign(rstate: ReviewState, dec: str, reason: str, pw: str, request: gr.Request) -> list[Any]:
            return review_outputs(h.sign_review(svc, _user(request), rstate, dec, reason, pw)) + [""]

        sign_btn.click(do_sign, [review_state, decision, review_reason, password], review_outs + [password],
                       api_name="sign_review", **private)

        # ---------------------------------------------------------------- audit wiring
        filters = [f_user, f_role, f_action, f_doc, f_template, f_since, f_until]

        def query(u: Any, r: Any, a: Any, d: Any, t: Any, s: Any, e: Any) -> AuditQuery:
            return AuditQuery(user=u or "", role=r or "", action=a or "", document=d, template=t or "",
                              since=s or "", until=e or "")

        def do_audit(*args: Any) -> list[Any]:
            request = args[-1]
            up = h.audit_table(svc, _user(request), query(*args[:-1]))
            charts = h.feedback_charts(svc, _user(request))
            c = charts.charts or {}
            return [_msg(up.message, up.kind), up.rows if up.rows is not None else gr.skip(),
                    c.get("per_day", gr.skip()), c.get("per_template", gr.skip()), c.get("per_term", gr.skip()),
                    c.get("pin_rate", gr.skip())]

        audit_outs = [audit_msg, trail, chart_day, chart_tpl, chart_term, chart_rate]

        def do_audit_req(u: Any, r: Any, a: Any, d: Any, t: Any, s: Any, e: Any, request: gr.Request) -> list[Any]:
            return do_audit(u, r, a, d, t, s, e, request)

        apply_btn.click(do_audit_req, filters, audit_outs, api_name="audit_table", **private)
        tab_audit.select(do_audit_req, filters, audit_outs, api_visibility="private")

        def do_export(u: Any, r: Any, a: Any, d: Any, t: Any, s: Any, e: Any, f: str,
                      request: gr.Request) -> list[Any]:
            up = h.export_audit(svc, _user(request), query(u, r, a, d, t, s, e), f)
            return [_msg(up.message, up.kind), up.file]

        export_btn.click(do_export, filters + [exp_fmt], [audit_msg, export_file], api_name="export", **private)

        def do_verify(request: gr.Request) -> str:
            up = h.verify_trail(svc, _user(request))
            return _msg(up.message, up.kind)

        verify_btn.click(do_verify, None, verify_out, api_name="verify", **private)

        # ---------------------------------------------------------------- admin wiring
        def admin_outputs(up: h.AdminUpdate) -> list[Any]:
            return [_msg(up.message, up.kind), up.rows if up.rows is not None else gr.skip()]

        def do_users(request: gr.Request) -> list[Any]:
            return admin_outputs(h.list_users(svc, _user(request)))

        tab_admin.select(do_users, None, [admin_msg, users], api_visibility="private")

        def do_add(n: str, r: str, p: str, request: gr.Request) -> list[Any]:
            return admin_outputs(h.add_user(svc, _user(request), n, r, p)) + [""]

        add_btn.click(do_add, [u_name, u_role, u_password], [admin_msg, users, u_password], api_name="add_user",
                      **private)

        def do_role(n: str, r: str, reason: str, request: gr.Request) -> list[Any]:
            return admin_outputs(h.change_role(svc, _user(request), n, r, reason))

        role_btn.click(do_role, [u_name, u_role, u_reason], [admin_msg, users], api_name="set_role", **private)

        def do_disable(n: str, reason: str, request: gr.Request) -> list[Any]:
            return admin_outputs(h.set_enabled(svc, _user(request), n, False, reason))

        disable_btn.click(do_disable, [u_name, u_reason], [admin_msg, users], api_name="disable_user", **private)

        def do_enable(n: str, reason: str, request: gr.Request) -> list[Any]:
            return admin_outputs(h.set_enabled(svc, _user(request), n, True, reason))

        enable_btn.click(do_enable, [u_name, u_reason], [admin_msg, users], api_name="enable_user", **private)
    return demo


def launch_kwargs(svc: Any, *, host: str = "127.0.0.1", port: int | None = 7860) -> dict[str, Any]:
    """Blocks.launch arguments of a hardened server: no share link, no monitoring, no API page,
    no run history, a small upload limit, login against the storage users."""
    from app.auth import gradio_auth

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
        ssr_mode=False,
        mcp_server=False,
        pwa=False,
        quiet=True,
        css=css,
        theme=gr.themes.Soft(primary_hue="indigo", neutral_hue="slate", font=["system-ui", "sans-serif"]),
        allowed_paths=[],
        blocked_paths=[str(svc.exports_dir)],
    )
