"""The Review tab: layout and wiring only; the work is in app.review."""

from __future__ import annotations

from typing import Any

import gradio as gr

from app import review
from app.review import ReviewUpdate
from app.services import Services
from app.state import ReviewState
from app.ui_common import UNDOCUMENTED, keep, message, user_of


class ReviewTab:
    """Lays out the Review tab (inside the page's gr.Tabs) and wires its events to app.review."""

    def __init__(self, svc: Services, state: gr.State) -> None:
        self.svc = svc
        self.state = state  # the session's ReviewState
        with gr.Tab("Review", id="review", visible=False) as self.tab:
            self.msg = gr.HTML("", elem_id="dd-review-msg")
            with gr.Row():
                self.queue = gr.Dataframe(headers=review.QUEUE_HEADERS, interactive=False, wrap=True,
                                          label="Awaiting review")
            with gr.Row():
                self.refresh_btn = gr.Button("Refresh", size="sm")
                self.document = gr.Number(label="Document", precision=0, minimum=1, elem_id="dd-review-doc")
                self.open_btn = gr.Button("Open", size="sm", elem_id="dd-review-open")
            self.doc_view = gr.HTML("")
            with gr.Accordion("History", open=False):
                self.history = gr.HTML("")
            with gr.Row():
                self.decision = gr.Radio(["approve", "reject"], value="approve", label="Decision")
                self.reason = gr.Textbox(label="Reason (required to reject; at most 2,000 characters)", scale=2)
                self.password = gr.Textbox(label="Password (signs the decision)", type="password",
                                           elem_id="dd-review-password")
            gr.Markdown("**Meaning of the signature.** Approve: *" + review.SIGNATURE_MEANINGS["approve"] +
                        "* Reject: *" + review.SIGNATURE_MEANINGS["reject"] + "*")
            self.sign_btn = gr.Button("Sign", variant="primary", elem_id="dd-review-sign")
        self.outputs = [self.msg, self.queue, self.doc_view, self.history, self.state]
        self._wire()

    def _wire(self) -> None:
        svc, outs = self.svc, self.outputs

        def review_outputs(up: ReviewUpdate) -> list[Any]:
            return [message(up.message, up.kind) if up.message else gr.skip(), keep(up.queue),
                    keep(up.document_html), keep(up.history_html), keep(up.state)]

        def do_queue(request: gr.Request) -> list[Any]:
            return review_outputs(review.review_queue(svc, user_of(request)))

        self.refresh_btn.click(do_queue, None, outs, api_name="review_queue", **UNDOCUMENTED)
        self.tab.select(do_queue, None, outs, api_visibility="private")

        def do_open(doc_id: Any, request: gr.Request) -> list[Any]:
            return review_outputs(review.open_review(svc, user_of(request), doc_id))

        self.open_btn.click(do_open, [self.document], outs, api_name="open_review", **UNDOCUMENTED)

        def do_pick(evt: gr.SelectData, request: gr.Request) -> list[Any]:
            row = evt.row_value or []
            doc_id = row[0] if row else None
            return [doc_id] + review_outputs(review.open_review(svc, user_of(request), doc_id))

        self.queue.select(do_pick, None, [self.document, *outs], api_visibility="private")

        def do_sign(rstate: ReviewState, dec: str, reason: str, pw: str, request: gr.Request) -> list[Any]:
            return review_outputs(review.sign_review(svc, user_of(request), rstate, dec, reason, pw)) + [""]

        self.sign_btn.click(do_sign, [self.state, self.decision, self.reason, self.password], outs + [self.password],
                            api_name="sign_review", **UNDOCUMENTED)
