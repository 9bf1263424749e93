"""Report templates: fixed text that is pinned, and `{{slot:N}}` places of N tokens to generate.

Glossary
  layout  the token sequence a template expands to: fixed tokens (pinned) and slot positions
  slot    a run of N free positions the sampler writes; `{{slot:N}}`, 1 <= N <= MAX_SLOT
  pins    {position: token id} for every fixed token

Example: "FINDING: {{slot:40}}\nACTION: {{slot:30}}" expands to the tokens of "FINDING:",
40 free positions, the tokens of "\nACTION:", 30 free positions: spaces and tabs right before a
slot are left for the slot to write (its first token then starts with a space, as words do).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from engine.tokenizer import Tokenizer

MAX_SLOT = 4096
MAX_TEMPLATE_TOKENS = 16384
_SLOT = re.compile(r"\{\{\s*slot\s*:\s*([^}]*?)\s*\}\}")
_BRACES = re.compile(r"\{\{|\}\}")


class TemplateError(ValueError):
    """A template that cannot be expanded; the message says where and why."""


@dataclass(frozen=True)
class Slot:
    start: int  # first position of the slot in the layout
    length: int  # N


@dataclass(frozen=True)
class Layout:
    length: int
    pins: dict[int, int] = field(default_factory=dict)
    slots: tuple[Slot, ...] = ()


def expand(text: str, tokenizer: Tokenizer) -> Layout:
    """Expand a template into pinned fixed tokens and free slot positions."""
    if not text.strip():
        raise TemplateError("template is empty")
    pins: dict[int, int] = {}
    slots: list[Slot] = []
    pos = 0
    last = 0

    def fixed(part: str, where: int) -> None:
        nonlocal pos
        bad = _BRACES.search(part)
        if bad:
            line = text.count("\n", 0, where + bad.start()) + 1
            raise TemplateError(f"line {line}: unrecognised '{{{{...}}}}' (write {{{{slot:N}}}})")
        for tid in tokenizer.encode(part):
            pins[pos] = tid
            pos += 1

    for m in _SLOT.finditer(text):
        # "Label: {{slot}}": the space goes to the slot. Byte-level BPE joins a space to the
        # word after it, so the model writes " word" there as in its training text; a pinned
        # lone space token is never seen in training and made slots start with word pieces.
        fixed(text[last : m.start()].rstrip(" \t"), last)
        raw = m.group(1)
        line = text.count("\n", 0, m.start()) + 1
        if not raw.isdigit():
            raise TemplateError(f"line {line}: slot length {raw!r} is not a whole number")
        n = int(raw)
        if not 1 <= n <= MAX_SLOT:
            raise TemplateError(f"line {line}: slot length {n} is outside 1..{MAX_SLOT}")
        slots.append(Slot(pos, n))
        pos += n
        last = m.end()
    fixed(text[last:], last)
    if not slots:
        raise TemplateError("template has no {{slot:N}} to generate")
    if pos > MAX_TEMPLATE_TOKENS:
        raise TemplateError(f"template expands to {pos} tokens; at most {MAX_TEMPLATE_TOKENS}")
    return Layout(length=pos, pins=pins, slots=tuple(slots))
