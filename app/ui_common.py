"""What the tab builders (app.ui_draft, ui_review, ui_audit, ui_admin) share: the user of a
request, the data a page event carries, and how a handler's result becomes component updates."""

from __future__ import annotations

from typing import Any

import gradio as gr

from app import render

# listeners callable by API clients (gradio_client) but left off the API page
UNDOCUMENTED: dict[str, Any] = {"api_visibility": "undocumented"}


def user_of(request: gr.Request | None) -> str | None:
    """The logged-in user's name (handlers check the role with it, on the server)."""
    return getattr(request, "username", None) if request is not None else None


def event_value(evt: gr.EventData, name: str) -> Any:
    """A field of the data a custom event carries (`trigger(name, {field: ...})` in the page's
    script), read as the attribute gr.EventData offers for it; None if the event has no such field."""
    try:
        return getattr(evt, name)
    except (AttributeError, TypeError):  # no such field, or an event sent without data
        return None


def message(text: str, kind: str) -> str:
    """A status line (app.render.message_html)."""
    return render.message_html(text, kind)


def keep(value: Any) -> Any:
    """The value for an output, or gr.skip() (leave the component as it is) when it is None."""
    return value if value is not None else gr.skip()
