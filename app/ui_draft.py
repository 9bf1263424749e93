"""The Draft tab: layout and wiring only; the work is in app.draft.

The draft view is a gr.HTML whose value is JSON (app.render.draft_payload). Its template is
static markup; the script in TOKEN_JS builds one <span data-pos> per token with textContent (model
text is never parsed as HTML), and sends the page's acts back as custom events: "pin" (a click on
a token, with its position) and "select_span" (a selection of tokens, with start and end). A
listener reads those fields as attributes of its gr.EventData (evt.pos, evt.start, evt.end).
Every listener passes request.username to its handler, which checks the role on the server.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import gradio as gr

from app import draft, render, steering
from app.draft_view import DraftUpdate
from app.services import Services
from app.state import DraftState
from app.ui_common import UNDOCUMENTED, event_value, keep, message, user_of
from engine.config import for_kind

TOKEN_TEMPLATE = '<div class="dd-view"><div class="dd-caption"></div><div class="dd-tokens" aria-label="draft"></div></div>'

TOKEN_JS = r"""
const FLAG = {p: 'pinned', m: 'template', e: 'edited', c: 'changed', s: 'special', x: 'end'};
let shown = {step: 0, layout: 0};
let press = null;
let held = false, pending = false;  // while a button is down over the draft, the text holds still
function draw() {
  if (held) { pending = true; return; }
  pending = false;
  const v = props.value || {};
  const root = element.querySelector('.dd-tokens');
  const cap = element.querySelector('.dd-caption');
  if (!root) return;
  const cells = v.cells || [];
  // update the token elements in place: a press or a selection keeps its element across steps
  for (let i = 0; i < cells.length; i++) {
    const c = cells[i];
    let s = root.children[i];
    if (!s) { s = document.createElement('span'); root.appendChild(s); }
    let cls = 'tok c' + (c.l | 0);
    for (const f of String(c.k || '')) { if (FLAG[f]) cls += ' ' + FLAG[f]; }
    if (s.className !== cls) s.className = cls;
    const pos = String(c.i | 0);
    if (s.dataset.pos !== pos) s.dataset.pos = pos;
    const t = String(c.t);
    if (s.textContent !== t) s.textContent = t;
  }
  while (root.children.length > cells.length) root.lastChild.remove();
  shown = {step: v.step | 0, layout: v.layout | 0};
  element.dataset.step = String(shown.step);
  element.dataset.layout = String(shown.layout);
  if (cap) cap.textContent = String(v.caption || '');
}
function posOf(node) {
  let n = node && node.nodeType === 3 ? node.parentElement : node;
  while (n && n !== element && !(n.dataset && n.dataset.pos !== undefined)) n = n.parentElement;
  return n && n !== element ? Number(n.dataset.pos) : null;
}
// a press names the token under the pointer as it was shown then (position, step, layout);
// the server pins that token even if the draft moved on before the button came up
function release() {
  held = false;
  if (pending) draw();
}
document.addEventListener('mouseup', () => setTimeout(release, 0));
element.addEventListener('mousedown', (ev) => {
  held = true;
  const s = ev.target.closest ? ev.target.closest('span[data-pos]') : null;
  press = s && element.contains(s) ? {pos: Number(s.dataset.pos), step: shown.step, layout: shown.layout,
                                      x: ev.clientX, y: ev.clientY} : null;
});
function posAt(ev) {
  const n = document.elementFromPoint(ev.clientX, ev.clientY);
  const s = n && n.closest ? n.closest('span[data-pos]') : null;
  return s && element.contains(s) ? Number(s.dataset.pos) : null;
}
element.addEventListener('mouseup', (ev) => {
  const sel = window.getSelection();
  const p = press;
  press = null;
  const moved = p && (Math.abs(ev.clientX - p.x) >= 8 || Math.abs(ev.clientY - p.y) >= 8);
  const q = moved ? posAt(ev) : null;
  if (moved && q !== null) {  // a drag: the tokens under the pointer at press and at release
    trigger('select_span', {start: Math.min(p.pos, q), end: Math.max(p.pos, q) + 1, layout: p.layout});
    return;
  }
  if (sel && !sel.isCollapsed) {
    const a = posOf(sel.anchorNode), b = posOf(sel.focusNode);
    if (a !== null && b !== null) {
      trigger('select_span', {start: Math.min(a, b), end: Math.max(a, b) + 1, layout: shown.layout});
      return;
    }
  }
  if (p && Math.abs(ev.clientX - p.x) < 8 && Math.abs(ev.clientY - p.y) < 8) {
    trigger('pin', {pos: p.pos, step: p.step, layout: p.layout});
  }
});
draw();
watch('value', draw);
"""

LEGEND = (
    '<div class="dd-legend">'
    '<span class="tok c0">low</span><span class="tok c1">·</span><span class="tok c2">·</span>'
    '<span class="tok c3">·</span><span class="tok c4">high</span> confidence &nbsp; '
    '<span class="tok c4 pinned">pinned</span> <span class="tok c4 template">template</span> '
    '<span class="tok c4 edited">edited</span> <span class="tok c2 changed">changed this step</span> '
    f'<span class="tok c0 special">{render.SPECIAL_GLYPH}</span> noise, not written yet &nbsp; '
    f'<span class="tok c4 end">{render.END_GLYPH}</span> end of a slot\'s text'
    '</div>'
)

HELP = (
    "Click a token to pin or unpin it: the token you saw is pinned, even if the next step already changed it. "
    "Select tokens with the mouse to fill the span below, type a replacement of any length and press Replace. "
    "Lock term pins every occurrence of a phrase. All of it works while the draft streams (in effect from "
    "the next step), while it is paused, and on a complete draft (Resume then refines the draft around "
    "your change; Accept takes it as it is)."
)


def draft_outputs(up: DraftUpdate) -> list[Any]:
    """A handler's DraftUpdate as the values of DraftTab.outputs (gr.skip() for what stays)."""
    # a streamed update's message is the stream's status; any other is an act's result (its own line)
    text = message(up.message, up.kind) if up.message else gr.skip()
    to_status = up.streamed and up.kind != "error"
    msg, status = (gr.skip(), text) if to_status else (text, gr.skip())
    slider = (gr.update(value=up.step, maximum=max(1, up.total or 1)) if up.step is not None else gr.skip())
    if up.runs is not None:
        current = next((v for _, v in up.runs if up.state is not None and v == up.state.run_id), None)
        runs = gr.update(choices=up.runs, value=current)
    else:
        runs = gr.skip()
    ref = up.state.run_id if up.state is not None else None
    return [msg, keep(up.payload), slider, keep(up.state), runs, keep(up.text), status,
            ref if up.state is not None else gr.skip()]


class DraftTab:
    """Lays out the Draft tab (inside the page's gr.Tabs) and wires its events to app.draft."""

    def __init__(self, svc: Services, state: gr.State, template_choices: list[str]) -> None:
        self.svc = svc
        self.state = state  # the session's DraftState
        with gr.Tab("Draft", id="draft", visible=False) as self.tab:
            with gr.Row(equal_height=False):
                with gr.Column(scale=1, min_width=260, elem_classes="dd-panel"):
                    self._settings(template_choices)
                with gr.Column(scale=3, elem_classes="dd-main"):
                    self._view()
                    self._steering()
                    self._finishing()
            # the same act as a click on a token, by position, for keyboards and API clients
            self.toggle_pos = gr.Number(visible=False, precision=0)
            # the run on the page, kept by the page itself: after a server restart (or on another
            # replica) the session's state is gone, and handlers find the run by this id
            self.run_ref = gr.Number(value=0, visible=False, precision=0, elem_id="dd-run-ref")
        self.outputs = [self.msg, self.view, self.step_slider, self.state, self.runs, self.plain, self.status,
                        self.run_ref]
        self._wire_run()
        self._wire_steering()
        self._wire_finishing()

    # ------------------------------------------------------------------------------ layout
    def _settings(self, template_choices: list[str]) -> None:
        lim, cfg = self.svc.limits, self.svc.ckpt.sampler_cfg
        self.template = gr.Dropdown(label="Template", choices=template_choices, value=template_choices[-1],
                                    allow_custom_value=True, elem_id="dd-template")
        # no bounds in the page: a number out of range is refused with the range, never silently changed
        self.length = gr.Number(label=f"Length (tokens, free length only; 1 to {lim.max_length})", value=64,
                                precision=0, elem_id="dd-length")
        free = for_kind(cfg, free_length=True).steps
        kinds = f"; {cfg.steps} for a template, {free} for free length" if free != cfg.steps else ""
        self.steps = gr.Number(label=f"Steps (1 to {lim.max_steps}{kinds})",
                               value=draft.default_steps(self.svc, template_choices[-1], None), precision=0,
                               elem_id="dd-steps")
        with gr.Row():
            self.seed = gr.Number(label="Seed", value=0, precision=0)
            self.temperature = gr.Slider(label="Temperature", minimum=0.1, maximum=2.0, step=0.05,
                                         value=float(cfg.temperature or 1.0))
        self.pace = gr.Radio(draft.PACE_LABELS, value="watch", label="Pace", elem_id="dd-pace")
        self.title = gr.Textbox(label=f"Title (optional, at most {draft.MAX_TITLE_CHARS} characters)")
        self.generate_btn = gr.Button("Generate", variant="primary", elem_id="dd-generate")
        with gr.Row():
            self.pause_btn = gr.Button("Pause", elem_id="dd-pause", size="sm")
            self.resume_btn = gr.Button("Resume", elem_id="dd-resume", size="sm")
        # custom values allowed: after a restart the server no longer knows the choices the page shows
        # (open_run checks the id)
        self.runs = gr.Dropdown(label="Runs of this document (branches)", choices=[], value=None, interactive=True,
                                allow_custom_value=True)
        self.reopen_btn = gr.Button("Reopen run", size="sm")

    def _view(self) -> None:
        self.status = gr.HTML("", elem_id="dd-status")  # the stream: generating, paused, complete
        self.msg = gr.HTML("", elem_id="dd-draft-msg")  # the result of the person's last act
        self.view = gr.HTML(render.EMPTY_PAYLOAD, html_template=TOKEN_TEMPLATE, js_on_load=TOKEN_JS,
                            elem_id="dd-view", apply_default_css=False)
        self.step_slider = gr.Slider(label="Step (drag to go back; pause first to branch)", minimum=0, maximum=1,
                                     step=1, value=0, elem_id="dd-step")
        gr.HTML(LEGEND)
        gr.Markdown(HELP, elem_classes="dd-help")

    def _steering(self) -> None:
        lim = self.svc.limits
        with gr.Row(elem_classes="dd-steer"):
            self.span_start = gr.Number(label="Span start", precision=0, value=0, min_width=90,
                                        elem_id="dd-span-start")
            self.span_end = gr.Number(label="Span end (excl.)", precision=0, value=0, min_width=90,
                                      elem_id="dd-span-end")
            self.replacement = gr.Textbox(label=f"Replacement (at most {lim.max_edit_chars:,} characters)", scale=3,
                                          elem_id="dd-replacement")
            self.edit_reason = gr.Textbox(label="Reason", scale=2, placeholder="correction")
        with gr.Row():
            self.replace_btn = gr.Button("Replace span", size="sm", elem_id="dd-replace")
            self.pin_span_btn = gr.Button("Pin span", size="sm")
            self.term = gr.Textbox(label="Term", show_label=False, placeholder="term to lock, e.g. hydraulic pump",
                                   scale=2, elem_id="dd-term")
            self.match_case = gr.Checkbox(label="Match case", value=False, min_width=120, elem_id="dd-match-case")
            self.lock_btn = gr.Button("Lock term", size="sm", elem_id="dd-lock")

    def _finishing(self) -> None:
        with gr.Row(elem_classes="dd-finish"):
            self.accept_btn = gr.Button("Accept", variant="primary", size="sm", elem_id="dd-accept")
            self.reject_reason = gr.Textbox(show_label=False, placeholder="reason for rejecting", scale=2)
            self.reject_btn = gr.Button("Reject", variant="stop", size="sm")
            self.discard_btn = gr.Button("Discard", size="sm")
        with gr.Row():
            self.fmt = gr.Radio(["md", "txt"], value="md", label="Download as", min_width=160)
            self.download_btn = gr.Button("Download", size="sm")
            self.download_file = gr.File(label="File", interactive=False, height=60)
        with gr.Accordion("Plain text", open=False):
            self.plain = gr.Textbox(show_label=False, lines=8, interactive=False, elem_id="dd-plain")

    # ------------------------------------------------------------------------------ wiring
    def on_screen(self, st: DraftState | None, ref: Any, request: gr.Request | None) -> DraftState | None:
        """The run on the page, also when the server lost the session's state (app.draft.on_screen)."""
        return draft.on_screen(self.svc, user_of(request), st, ref)

    def _wire_run(self) -> None:
        svc, state, outs = self.svc, self.state, self.outputs
        live: dict[str, Any] = {"show_progress": "hidden", **UNDOCUMENTED}
        # drafting: up to limits.active_drafts stream at once, their steps batched into shared
        # forwards; a person beyond that waits in the queue, and the status line shows their place
        # and Gradio's estimate of the wait (then the elapsed time while the draft streams)
        drafting: dict[str, Any] = {**live, "concurrency_limit": svc.limits.active_drafts, "concurrency_id": "model",
                                    "show_progress": "minimal", "show_progress_on": [self.status]}

        def do_generate(st: DraftState, tpl: str, n: Any, k: Any, sd: Any, temp: Any, ttl: str, pace: Any,
                        request: gr.Request) -> Iterator[list[Any]]:
            for up in draft.generate(svc, user_of(request), st, template=tpl, length=n, steps=k, seed=sd,
                                     temperature=temp, title=ttl, pace=pace):
                yield draft_outputs(up)

        self.generate_btn.click(do_generate, [state, self.template, self.length, self.steps, self.seed,
                                              self.temperature, self.title, self.pace], outs, api_name="generate",
                                **drafting)

        def do_resume(st: DraftState, pace: Any, ref: Any, request: gr.Request) -> Iterator[list[Any]]:
            st = self.on_screen(st, ref, request)
            for up in draft.resume(svc, user_of(request), st, pace=pace):
                yield draft_outputs(up)

        self.resume_btn.click(do_resume, [state, self.pace, self.run_ref], outs, api_name="resume", **drafting)

        # the Steps field follows the kind of draft chosen, unless the person typed their own number
        self.template.input(lambda tpl, k: draft.default_steps(svc, tpl, k), [self.template, self.steps], [self.steps],
                            queue=False, api_visibility="private", show_progress="hidden")

        def do_pace(st: DraftState, pace: Any, ref: Any, request: gr.Request) -> list[Any]:
            st = self.on_screen(st, ref, request)
            return draft_outputs(draft.set_pace(svc, user_of(request), st, pace))

        self.pace.change(do_pace, [state, self.pace, self.run_ref], outs, concurrency_limit=None, api_visibility="private",
                         show_progress="hidden")

        def do_pause(st: DraftState, ref: Any, request: gr.Request) -> list[Any]:
            st = self.on_screen(st, ref, request)
            return draft_outputs(draft.pause(svc, user_of(request), st))

        self.pause_btn.click(do_pause, [state, self.run_ref], outs, api_name="pause", concurrency_limit=None, **live)

        def do_view_step(st: DraftState, k: Any, ref: Any, request: gr.Request) -> list[Any]:
            st = self.on_screen(st, ref, request)
            return draft_outputs(draft.view_step(svc, user_of(request), st, k))

        self.step_slider.release(do_view_step, [state, self.step_slider, self.run_ref], outs, api_name="view_step",
                                 concurrency_limit=None, **live)

        def do_reopen(st: DraftState, run_id: Any, ref: Any, request: gr.Request) -> list[Any]:
            st = self.on_screen(st, ref, request)
            return draft_outputs(draft.open_run(svc, user_of(request), st, run_id))

        self.reopen_btn.click(do_reopen, [state, self.runs, self.run_ref], outs, api_name="open_run", **UNDOCUMENTED)

    def _wire_steering(self) -> None:
        svc, state, outs = self.svc, self.state, self.outputs
        live: dict[str, Any] = {"concurrency_limit": None, "show_progress": "hidden"}

        def do_click_pin(st: DraftState, ref: Any, evt: gr.EventData, request: gr.Request) -> list[Any]:
            st = self.on_screen(st, ref, request)
            return draft_outputs(steering.toggle_pin(svc, user_of(request), st, event_value(evt, "pos"),
                                                     event_value(evt, "step"), event_value(evt, "layout")))

        self.view.pin(do_click_pin, [state, self.run_ref], outs, api_name="click_pin", **live, **UNDOCUMENTED)

        def do_toggle(st: DraftState, pos: Any, ref: Any, request: gr.Request) -> list[Any]:
            st = self.on_screen(st, ref, request)
            return draft_outputs(steering.toggle_pin(svc, user_of(request), st, pos))

        self.toggle_pos.change(do_toggle, [state, self.toggle_pos, self.run_ref], outs, api_name="toggle_pin", **live,
                               **UNDOCUMENTED)

        def do_select_span(st: DraftState, ref: Any, evt: gr.EventData, request: gr.Request) -> list[Any]:
            st = self.on_screen(st, ref, request)
            a, b, text = steering.span_text(svc, st, event_value(evt, "start"), event_value(evt, "end"),
                                            event_value(evt, "layout"))
            return [a, b, text]

        self.view.select_span(do_select_span, [state, self.run_ref], [self.span_start, self.span_end, self.replacement], **live,
                              api_visibility="private")

        def do_pin_span(st: DraftState, a: Any, b: Any, ref: Any, request: gr.Request) -> list[Any]:
            st = self.on_screen(st, ref, request)
            return draft_outputs(steering.pin_span(svc, user_of(request), st, a, b))

        self.pin_span_btn.click(do_pin_span, [state, self.span_start, self.span_end, self.run_ref], outs, api_name="pin_span",
                                **live, **UNDOCUMENTED)

        def do_edit(st: DraftState, a: Any, b: Any, text: str, reason: str, ref: Any, request: gr.Request) -> list[Any]:
            st = self.on_screen(st, ref, request)
            return draft_outputs(steering.edit_span(svc, user_of(request), st, a, b, text, reason))

        self.replace_btn.click(do_edit, [state, self.span_start, self.span_end, self.replacement, self.edit_reason, self.run_ref],
                               outs, api_name="edit_span", **live, **UNDOCUMENTED)

        def do_lock(st: DraftState, t: str, exact: bool, ref: Any, request: gr.Request) -> list[Any]:
            st = self.on_screen(st, ref, request)
            return draft_outputs(steering.lock_term(svc, user_of(request), st, t, bool(exact)))

        self.lock_btn.click(do_lock, [state, self.term, self.match_case, self.run_ref], outs, api_name="lock_term", **live,
                            **UNDOCUMENTED)

    def _wire_finishing(self) -> None:
        svc, state, outs = self.svc, self.state, self.outputs

        def do_accept(st: DraftState, ref: Any, request: gr.Request) -> list[Any]:
            st = self.on_screen(st, ref, request)
            return draft_outputs(draft.accept(svc, user_of(request), st))

        self.accept_btn.click(do_accept, [state, self.run_ref], outs, api_name="accept", **UNDOCUMENTED)

        def do_reject(st: DraftState, reason: str, ref: Any, request: gr.Request) -> list[Any]:
            st = self.on_screen(st, ref, request)
            return draft_outputs(draft.reject(svc, user_of(request), st, reason))

        self.reject_btn.click(do_reject, [state, self.reject_reason, self.run_ref], outs, api_name="reject", **UNDOCUMENTED)

        def do_discard(st: DraftState, ref: Any, request: gr.Request) -> list[Any]:
            st = self.on_screen(st, ref, request)
            return draft_outputs(draft.discard(svc, user_of(request), st))

        self.discard_btn.click(do_discard, [state, self.run_ref], outs, api_name="discard", **UNDOCUMENTED)

        def do_download(st: DraftState, f: str, ref: Any, request: gr.Request) -> list[Any]:
            st = self.on_screen(st, ref, request)
            path, text = draft.download(svc, user_of(request), st, f)
            return [message(text, "ok" if path else "error"), path]

        self.download_btn.click(do_download, [state, self.fmt, self.run_ref], [self.msg, self.download_file], api_name="download",
                                **UNDOCUMENTED)
