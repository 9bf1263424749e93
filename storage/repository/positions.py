"""Where positions and pinned spans go when an edit changes the length of a run's draft.

Glossary
  edit     the tokens [start, end) of a step replaced by new_len tokens (start == end: an
           insertion; new_len 0: a deletion)
  change   new_len - (end - start): how far every position from `end` on moves
  span     [span_start, span_end): a pin's tokens, end exclusive

The rule: a position before `start` stays, a position inside [start, end) is gone (its token was
replaced), a position from `end` on moves by the change. This is storage's own copy of
engine/positions.py (storage does not import the engine); tests/test_positions.py checks that
the two agree. Pure functions of integers: no database here.
"""

from __future__ import annotations


def length_change(start: int, end: int, new_len: int) -> int:
    """How much longer the draft is after replacing [start, end) by new_len tokens (negative: shorter)."""
    return new_len - (end - start)


def shift_position(position: int, start: int, end: int, new_len: int) -> int | None:
    """The position after replacing [start, end) by new_len tokens; None inside the span."""
    if position < start:
        return position
    if position < end:
        return None
    return position + length_change(start, end, new_len)


def moved_span(span_start: int, span_end: int, start: int, end: int, new_len: int) -> list[tuple[int, int]]:
    """The parts of the span [span_start, span_end) outside the replaced [start, end), at their
    positions after the edit: the part before `start` stays, the part from `end` on moves with
    its tokens. A span after the edit comes back whole and shifted; one inside it, not at all."""
    parts: list[tuple[int, int]] = []
    if span_start < start:
        parts.append((span_start, min(span_end, start)))
    if span_end > end:
        first = shift_position(max(span_start, end), start, end, new_len)
        last = shift_position(span_end - 1, start, end, new_len)
        assert first is not None and last is not None  # both lie at or after `end`
        parts.append((first, last + 1))
    return parts
