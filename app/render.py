"""Tokens + confidences + pins -> what the page shows. Pure functions; every text is escaped.

Glossary
  cell     one token as the page shows it: {"i": position, "t": text, "l": confidence level 0..4,
           "k": kind flags}. The browser builds one <span data-pos=i> per cell with textContent
           (never innerHTML), so model text is never parsed as HTML there.
  kind     flags of a cell, one letter each: "p" pinned by a person, "m" fixed text of the template,
           "e" inside an edited span, "c" changed since the previous step, "s" special token
           (noise / mask, shown as a placeholder), "x" the end of a slot's text (<eos>, shown as
           END_GLYPH: the fill stopped before its slot's last position)
  level    the model's confidence in the token bucketed into 5 colours (LEVELS)
  payload  the JSON value of the draft view: cells plus step, total steps, layout, timing and a
           caption; a click on a token sends back its position with the step and layout it was
           seen in, so the server pins the token the person saw
Static views (review history, the audit screen, tests) use `draft_html`, which escapes with
html.escape; the live draft view uses `draft_payload` and the browser-side builder in ui.py.
"""

from __future__ import annotations

import html
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

LEVELS = (0.2, 0.4, 0.6, 0.8)  # upper bounds of levels 0..3; level 4 is >= 0.8
SPECIAL_GLYPH = "\u2591"  # light shade: a position that holds no text yet (noise / mask)
END_GLYPH = "\u00b6"  # pilcrow: the text of this slot ends here (an <eos> position)
KIND_NAMES = {"p": "pinned", "m": "template", "e": "edited", "c": "changed", "s": "special", "x": "end"}


def confidence_level(c: float) -> int:
    """0 (least confident) .. 4 (most); NaN counts as 0."""
    if not c == c:  # NaN
        return 0
    for level, bound in enumerate(LEVELS):
        if c < bound:
            return level
    return 4


@dataclass(frozen=True)
class Frame:
    """One step as the page needs it (plain lists, copyable). All lists have length L."""

    index: int
    total: int
    token_ids: list[int]
    confidence: list[float]
    changed: list[bool]
    kinds: list[str]  # per position: "" or "pin" / "term" / "template" / "edit"
    elapsed_ms: float | None = None
    layout: int = 0  # which positions the frame has (app.runs glossary); a click sends it back


_KIND_FLAG = {"pin": "p", "term": "p", "template": "m", "edit": "e"}


def cells(pieces: Sequence[str], frame: Frame, special: Iterable[int] = (), end: Iterable[int] = ()) -> list[dict[str, Any]]:
    """One cell per token (see the glossary); `end` ids (<eos>) end a slot's text."""
    special, end = frozenset(special), frozenset(end)
    out: list[dict[str, Any]] = []
    for i, (text, tid) in enumerate(zip(pieces, frame.token_ids, strict=True)):
        flags = _KIND_FLAG.get(frame.kinds[i], "") if i < len(frame.kinds) else ""
        if i < len(frame.changed) and frame.changed[i]:
            flags += "c"
        if tid in end:
            flags += "x"
            text = END_GLYPH
        elif tid in special:
            flags += "s"
            text = SPECIAL_GLYPH
        conf = frame.confidence[i] if i < len(frame.confidence) else 0.0
        out.append({"i": i, "t": text, "l": confidence_level(conf), "k": flags})
    return out


def caption(frame: Frame, status: str = "") -> str:
    parts = [f"step {frame.index} of {frame.total}"]
    if frame.elapsed_ms is not None:
        parts.append(f"{frame.elapsed_ms:.0f} ms")
    n_pinned = sum(1 for k in frame.kinds if k in ("pin", "term"))
    n_edit = sum(1 for k in frame.kinds if k == "edit")
    n_changed = sum(1 for c in frame.changed if c)
    parts.append(f"{len(frame.token_ids)} tokens")
    parts.append(f"{n_changed} changed")
    if n_pinned:
        parts.append(f"{n_pinned} pinned")
    if n_edit:
        parts.append(f"{n_edit} edited")
    if status:
        parts.append(status)
    return " · ".join(parts)


def draft_payload(pieces: Sequence[str], frame: Frame, *, special: Iterable[int] = (), status: str = "",
                  run_id: int | None = None, selectable: bool = True, end: Iterable[int] = ()) -> dict[str, Any]:
    """The JSON value of the live draft view."""
    return {
        "cells": cells(pieces, frame, special, end),
        "step": frame.index,
        "total": frame.total,
        "layout": frame.layout,
        "caption": caption(frame, status),
        "run": run_id,
        "selectable": selectable,
    }


EMPTY_PAYLOAD: dict[str, Any] = {"cells": [], "step": 0, "total": 0, "layout": 0, "caption": "no draft yet",
                                 "run": None, "selectable": False}


def draft_html(payload: Mapping[str, Any]) -> str:
    """The same cells as static, escaped HTML (no script): review history, tests."""
    spans = []
    for c in payload.get("cells", []):
        classes = ["tok", f"c{int(c.get('l', 0))}"] + [KIND_NAMES[f] for f in str(c.get("k", "")) if f in KIND_NAMES]
        spans.append(f'<span class="{" ".join(classes)}" data-pos="{int(c["i"])}">{html.escape(str(c["t"]))}</span>')
    cap = html.escape(str(payload.get("caption", "")))
    return f'<div class="dd-draft-static"><div class="dd-caption">{cap}</div><div class="dd-tokens">{"".join(spans)}</div></div>'


def message_html(text: str, kind: str = "info") -> str:
    """A one-line status message; kind is info / ok / error."""
    kind = kind if kind in ("info", "ok", "error") else "info"
    if not text:
        return ""
    return f'<div class="dd-msg dd-msg-{kind}" role="status">{html.escape(text)}</div>'


def table_html(headers: Sequence[str], rows: Iterable[Sequence[Any]], *, empty: str = "nothing to show") -> str:
    """A plain escaped table."""
    head = "".join(f"<th>{html.escape(str(h))}</th>" for h in headers)
    body = "".join("<tr>" + "".join(f"<td>{html.escape('' if v is None else str(v))}</td>" for v in r) + "</tr>"
                   for r in rows)
    if not body:
        body = f'<tr><td colspan="{len(headers)}" class="dd-empty">{html.escape(empty)}</td></tr>'
    return f'<table class="dd-table"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>'


def document_html(title: str, text: str, meta: Sequence[tuple[str, Any]] = ()) -> str:
    """A document for reading (review screen): title, metadata and the text, all escaped."""
    rows = "".join(f"<dt>{html.escape(str(k))}</dt><dd>{html.escape(str(v))}</dd>" for k, v in meta)
    return (f'<article class="dd-doc"><h3>{html.escape(title)}</h3><dl class="dd-meta">{rows}</dl>'
            f'<pre class="dd-doc-text">{html.escape(text)}</pre></article>')


def to_markdown(title: str, text: str, meta: Sequence[tuple[str, Any]] = ()) -> str:
    """The final draft as Markdown: a heading, a metadata list, the text as written."""
    lines = [f"# {_md_line(title)}", ""]
    for k, v in meta:
        lines.append(f"- **{_md_line(str(k))}:** {_md_line(str(v))}")
    if meta:
        lines.append("")
    lines.append(text.rstrip("\n"))
    return "\n".join(lines) + "\n"


def _md_line(s: str) -> str:
    return " ".join(s.split())


def to_plain_text(title: str, text: str) -> str:
    return f"{title}\n{'=' * max(3, len(title))}\n\n{text.rstrip()}\n"
