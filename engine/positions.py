"""Where positions go when an edit changes the length of a draft.

Replacing the span [start, end) by `new_len` tokens keeps every position before `start`, drops
the positions inside the span (their tokens are gone), and moves every position from `end` on by
the change in length, `new_len - (end - start)`. The sampler (`engine.sampler.apply_edit`) and
the app's run control both use this one rule; storage keeps its own copy, because storage does
not import the engine, and `tests/test_positions.py` checks that the two agree.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TypeVar

V = TypeVar("V")


def shift_position(position: int, start: int, end: int, new_len: int) -> int | None:
    """The position after replacing [start, end) by new_len tokens; None inside the span."""
    if position < start:
        return position
    if position < end:
        return None
    return position + new_len - (end - start)


def shift_positions(values: Mapping[int, V], start: int, end: int, new_len: int) -> dict[int, V]:
    """`values` keyed by their positions after the edit (positions inside the span dropped)."""
    out: dict[int, V] = {}
    for p, v in values.items():
        q = shift_position(p, start, end, new_len)
        if q is not None:
            out[q] = v
    return out
