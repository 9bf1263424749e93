"""The Password tab: layout and wiring only; the work is in app.account."""

from __future__ import annotations

from typing import Any

import gradio as gr

from app import account
from app.account import AccountUpdate
from app.services import Services
from app.ui_common import UNDOCUMENTED, message, user_of


class AccountTab:
    """Lays out the Password tab (inside the page's gr.Tabs) and wires its event to app.account.
    `changed` is the event of the button and `done` whether it changed the password, for the page
    to show its screens after it."""

    def __init__(self, svc: Services) -> None:
        self.svc = svc
        with gr.Tab("Password", id="password", visible=False) as self.tab:
            self.msg = gr.HTML("", elem_id="dd-password-msg")
            with gr.Row():
                self.old = gr.Textbox(label="Current password", type="password", elem_id="dd-password-old")
                self.new = gr.Textbox(label="New password", type="password", info=account.PASSWORD_RULES,
                                      elem_id="dd-password-new")
                self.again = gr.Textbox(label="New password again", type="password", elem_id="dd-password-again")
            self.btn = gr.Button("Change password", variant="primary", size="sm", elem_id="dd-password-change")
        self.done = gr.State(False)  # whether the last click changed the password
        self.changed = self._wire()

    def _wire(self) -> Any:
        svc = self.svc

        def do_change(old: str, new: str, again: str, request: gr.Request) -> list[Any]:
            keep = svc.sessions.token_of(getattr(request, "cookies", None)) if request is not None else None
            up: AccountUpdate = account.change_password(svc, user_of(request), old, new, again, keep_token=keep)
            return [message(up.message, up.kind), "", "", "", up.changed]

        return self.btn.click(do_change, [self.old, self.new, self.again],
                              [self.msg, self.old, self.new, self.again, self.done],
                              api_name="change_password", **UNDOCUMENTED)
