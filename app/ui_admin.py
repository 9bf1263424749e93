"""The Admin tab: layout and wiring only; the work is in app.admin."""

from __future__ import annotations

from typing import Any

import gradio as gr

from app import admin
from app.admin import AdminUpdate
from app.services import Services
from app.ui_common import UNDOCUMENTED, keep, message, user_of
from storage.models import ROLES


def _outputs(up: AdminUpdate) -> list[Any]:
    return [message(up.message, up.kind), keep(up.rows), keep(up.allow_self_review), keep(up.versions),
            gr.update(choices=up.version_ids) if up.version_ids is not None else gr.skip()]


class AdminTab:
    """Lays out the Admin tab (inside the page's gr.Tabs) and wires its events to app.admin."""

    def __init__(self, svc: Services) -> None:
        self.svc = svc
        with gr.Tab("Admin", id="admin", visible=False) as self.tab:
            self.msg = gr.HTML("", elem_id="dd-admin-msg")
            self.users = gr.Dataframe(headers=admin.USER_HEADERS, interactive=False, label="Users")
            with gr.Row():
                self.name = gr.Textbox(label="User", info=admin.NAME_RULES, elem_id="dd-admin-name")
                self.role = gr.Dropdown(list(ROLES), value=ROLES[0], label="Role", allow_custom_value=False,
                                        filterable=False, elem_id="dd-admin-role")
                self.password = gr.Textbox(label="Password (new users, resets; the user changes it at first login)",
                                           type="password", info=admin.PASSWORD_RULES, elem_id="dd-admin-password")
                self.reason = gr.Textbox(label="Reason (role changes, disabling, unlocking; at most 2,000 characters)",
                                         elem_id="dd-admin-reason")
            with gr.Row():
                self.add_btn = gr.Button("Add user", size="sm", variant="primary", elem_id="dd-admin-add")
                self.role_btn = gr.Button("Change role", size="sm")
                self.disable_btn = gr.Button("Disable", size="sm")
                self.enable_btn = gr.Button("Enable", size="sm")
                self.reset_btn = gr.Button("Set password", size="sm", elem_id="dd-admin-reset")
                self.unlock_btn = gr.Button("Unlock", size="sm", elem_id="dd-admin-unlock")
            with gr.Row():
                self.self_review = gr.Checkbox(value=False, label=admin.SELF_REVIEW_LABEL, elem_id="dd-self-review")
                self.self_review_btn = gr.Button("Save review setting", size="sm", elem_id="dd-self-review-save")
            self.versions = gr.Dataframe(headers=admin.VERSION_HEADERS, interactive=False, wrap=True,
                                         label="Model versions (new drafts use the default)", elem_id="dd-versions")
            with gr.Row():
                self.version = gr.Dropdown([], label="Model version", allow_custom_value=False, filterable=False,
                                           elem_id="dd-version")
                self.promote_btn = gr.Button("Promote to default", size="sm", elem_id="dd-promote")
        self._wire()

    def _wire(self) -> None:
        svc, outs = self.svc, [self.msg, self.users, self.self_review, self.versions, self.version]

        def do_users(request: gr.Request) -> list[Any]:
            return _outputs(admin.list_users(svc, user_of(request)))

        self.tab.select(do_users, None, outs, api_visibility="private")

        def do_add(n: str, r: str, p: str, request: gr.Request) -> list[Any]:
            return _outputs(admin.add_user(svc, user_of(request), n, r, p)) + [""]

        self.add_btn.click(do_add, [self.name, self.role, self.password], outs + [self.password], api_name="add_user",
                           **UNDOCUMENTED)

        def do_role(n: str, r: str, reason: str, request: gr.Request) -> list[Any]:
            return _outputs(admin.change_role(svc, user_of(request), n, r, reason))

        self.role_btn.click(do_role, [self.name, self.role, self.reason], outs, api_name="set_role", **UNDOCUMENTED)

        def do_disable(n: str, reason: str, request: gr.Request) -> list[Any]:
            return _outputs(admin.set_enabled(svc, user_of(request), n, False, reason))

        self.disable_btn.click(do_disable, [self.name, self.reason], outs, api_name="disable_user", **UNDOCUMENTED)

        def do_enable(n: str, reason: str, request: gr.Request) -> list[Any]:
            return _outputs(admin.set_enabled(svc, user_of(request), n, True, reason))

        self.enable_btn.click(do_enable, [self.name, self.reason], outs, api_name="enable_user", **UNDOCUMENTED)

        def do_reset(n: str, p: str, reason: str, request: gr.Request) -> list[Any]:
            return _outputs(admin.reset_password(svc, user_of(request), n, p, reason)) + [""]

        self.reset_btn.click(do_reset, [self.name, self.password, self.reason], outs + [self.password],
                             api_name="reset_password", **UNDOCUMENTED)

        def do_unlock(n: str, reason: str, request: gr.Request) -> list[Any]:
            return _outputs(admin.unlock(svc, user_of(request), n, reason))

        self.unlock_btn.click(do_unlock, [self.name, self.reason], outs, api_name="unlock_user", **UNDOCUMENTED)

        def do_self_review(allow: bool, request: gr.Request) -> list[Any]:
            return _outputs(admin.set_self_review(svc, user_of(request), allow))

        self.self_review_btn.click(do_self_review, [self.self_review], outs, api_name="set_self_review",
                                   **UNDOCUMENTED)

        def do_promote(model_id: str, reason: str, request: gr.Request) -> list[Any]:
            return _outputs(admin.promote(svc, user_of(request), model_id, reason))

        self.promote_btn.click(do_promote, [self.version, self.reason], outs, api_name="promote_model", **UNDOCUMENTED)
