"""Templates expand to pinned fixed text and free slots; bad templates say why."""

from __future__ import annotations

from pathlib import Path

import pytest

from engine.template import MAX_SLOT, TemplateError, expand
from engine.tiny import build_tiny_tokenizer

TEMPLATES = sorted((Path(__file__).resolve().parent.parent / "assets" / "templates").glob("*.txt"))


@pytest.fixture(scope="module")
def tok():
    return build_tiny_tokenizer()


def test_layout_pins_fixed_text_and_leaves_slots_free(tok) -> None:
    lay = expand("FINDING: {{slot:5}}\nACTION: {{ slot : 3 }}", tok)
    head, mid = tok.encode("FINDING:"), tok.encode("\nACTION:")  # the space before a slot is the slot's
    assert lay.length == len(head) + 5 + len(mid) + 3
    assert [lay.pins[i] for i in range(len(head))] == head
    s0, s1 = lay.slots
    assert (s0.start, s0.length) == (len(head), 5)
    assert (s1.start, s1.length) == (len(head) + 5 + len(mid), 3)
    free = set(range(lay.length)) - set(lay.pins)
    assert free == set(range(s0.start, s0.start + 5)) | set(range(s1.start, s1.start + 3))


def test_shipped_templates_expand(tok) -> None:
    assert len(TEMPLATES) >= 5
    for path in TEMPLATES:
        lay = expand(path.read_text(encoding="utf-8"), tok)
        assert lay.slots and lay.pins, path.name


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "empty"),
        ("   \n", "empty"),
        ("no slots here", "no {{slot:N}}"),
        ("A {{slot:x}}", "not a whole number"),
        ("A {{slot:0}}", "outside"),
        (f"A {{{{slot:{MAX_SLOT + 1}}}}}", "outside"),
        ("A {{slot:3}}\nB {{name}}", "line 2"),
        ("A {{slot:-4}}", "not a whole number"),
    ],
)
def test_bad_templates_are_refused_with_a_reason(tok, text: str, message: str) -> None:
    with pytest.raises(TemplateError, match=message.replace("{", r"\{").replace("}", r"\}")):
        expand(text, tok)
