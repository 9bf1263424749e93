"""app.render: pure functions from tokens, confidences and pins to what the page shows."""

from __future__ import annotations

from app import render
from app.render import Frame


def frame(n: int = 4, **kw) -> Frame:
    base = dict(index=2, total=8, token_ids=list(range(10, 10 + n)), confidence=[0.1, 0.5, 0.9, 1.0][:n],
                changed=[True, False, False, True][:n], kinds=["", "pin", "template", "edit"][:n])
    base.update(kw)
    return Frame(**base)


def test_confidence_levels_cover_0_to_1():
    assert [render.confidence_level(c) for c in (0.0, 0.19, 0.2, 0.5, 0.79, 0.8, 1.0)] == [0, 0, 1, 2, 3, 4, 4]
    assert render.confidence_level(float("nan")) == 0


def test_cells_carry_position_text_level_and_kind_flags():
    cells = render.cells(["a", " b", "<c>", "d"], frame())
    assert [c["i"] for c in cells] == [0, 1, 2, 3]
    assert [c["t"] for c in cells] == ["a", " b", "<c>", "d"]  # raw: the browser sets textContent
    assert [c["l"] for c in cells] == [0, 2, 4, 4]
    assert cells[0]["k"] == "c" and cells[1]["k"] == "p" and cells[2]["k"] == "m" and cells[3]["k"] == "ec"


def test_special_tokens_show_a_placeholder():
    cells = render.cells(["", "x", "", ""], frame(token_ids=[1, 11, 12, 13]), special={1})
    assert cells[0]["t"] == render.SPECIAL_GLYPH and "s" in cells[0]["k"]


def test_payload_caption_counts_step_pins_and_edits():
    p = render.draft_payload(["a", "b", "c", "d"], frame(elapsed_ms=12.0), status="paused", run_id=7)
    assert p["step"] == 2 and p["total"] == 8 and p["run"] == 7
    assert "step 2 of 8" in p["caption"] and "12 ms" in p["caption"] and "1 pinned" in p["caption"]
    assert "1 edited" in p["caption"] and "paused" in p["caption"]


def test_static_html_escapes_model_text():
    evil = '<img src=x onerror="alert(1)">'
    p = render.draft_payload([evil, "&", '"', "'"], frame())
    out = render.draft_html(p)
    assert "<img" not in out and "&lt;img" in out and "&amp;" in out and "&quot;" in out
    assert 'data-pos="0"' in out and "pinned" in out and "template" in out


def test_messages_tables_and_documents_are_escaped():
    assert "&lt;b&gt;" in render.message_html("<b>hi</b>", "error")
    assert render.message_html("", "ok") == ""
    assert "dd-msg-info" in render.message_html("x", "bogus")
    t = render.table_html(["a", "<h>"], [["<script>", None]])
    assert "<script>" not in t and "&lt;h&gt;" in t
    assert "nothing to show" in render.table_html(["a"], [])
    d = render.document_html("<T>", "</pre><script>", [("by", "<u>")])
    assert "<script>" not in d and "&lt;T&gt;" in d and "&lt;u&gt;" in d


def test_markdown_and_plain_text_downloads():
    md = render.to_markdown("Shift\nhandover", "line 1\nline 2\n", [("run", 3)])
    assert md.startswith("# Shift handover\n") and "- **run:** 3" in md and md.endswith("line 1\nline 2\n")
    txt = render.to_plain_text("T", "body")
    assert txt.startswith("T\n===\n\nbody")


def test_an_end_token_shows_the_end_glyph_not_the_noise_placeholder():
    cells = render.cells(["", "x", "", ""], frame(token_ids=[3, 11, 1, 13]), special={1, 3}, end={3})
    assert cells[0]["t"] == render.END_GLYPH and "x" in cells[0]["k"] and "s" not in cells[0]["k"]
    assert cells[2]["t"] == render.SPECIAL_GLYPH and "s" in cells[2]["k"]
    first = render.draft_html({"cells": cells}).split("<span")[1]
    assert "end" in first.split('"')[1].split(), "the static view names the end class"
