"""The position rule after a length-changing edit: the engine's copy and storage's copy agree.

Storage may not import the engine, so it keeps its own rule (storage.repository.positions). The
two must give the same answer for every position and edit, including insertions (start == end),
deletions (new_len 0) and positions on the span's boundaries; and storage's move of a pinned span
must match the engine's move of the pinned positions one by one.
"""

from __future__ import annotations

import itertools

from hypothesis import given
from hypothesis import strategies as st

from engine.positions import shift_position as engine_shift
from engine.positions import shift_positions
from storage.repository.positions import length_change, moved_span
from storage.repository.positions import shift_position as storage_shift


def _edits(max_pos: int, max_new: int):
    """Every edit [start, end) -> new_len with end <= max_pos and new_len <= max_new."""
    for start, end, new_len in itertools.product(range(max_pos + 1), range(max_pos + 1), range(max_new + 1)):
        if start <= end:
            yield start, end, new_len


@st.composite
def edit_and_position(draw):
    start = draw(st.integers(0, 10_000))
    end = draw(st.integers(start, start + draw(st.sampled_from([0, 1, 5, 10_000]))))
    new_len = draw(st.sampled_from([0, 1, end - start, draw(st.integers(0, 10_000))]))
    position = draw(st.sampled_from([start - 1, start, start + 1, end - 1, end, end + 1, draw(st.integers(0, 30_000))]))
    return max(position, 0), start, end, new_len


def test_both_copies_agree_on_every_small_case():
    cases = 0
    for start, end, new_len in _edits(8, 5):
        for pos in range(11):
            assert engine_shift(pos, start, end, new_len) == storage_shift(pos, start, end, new_len), (pos, start, end, new_len)
            cases += 1
    assert cases > 2000


@given(edit_and_position())
def test_both_copies_agree_on_large_positions(case):
    position, start, end, new_len = case
    assert engine_shift(position, start, end, new_len) == storage_shift(position, start, end, new_len)


def test_the_rule_itself():
    for shift in (engine_shift, storage_shift):
        assert shift(2, 3, 5, 7) == 2  # before the span: unchanged
        assert shift(3, 3, 5, 7) is None and shift(4, 3, 5, 7) is None  # inside, from its start: gone
        assert shift(5, 3, 5, 7) == 10  # from the end on: moved by 7 - 2
        assert shift(5, 5, 5, 2) == 7 and shift(4, 5, 5, 2) == 4  # an insertion moves the position it lands on
        assert shift(6, 3, 6, 0) == 3 and shift(5, 3, 6, 0) is None  # a deletion pulls the rest back
        assert shift(0, 0, 0, 3) == 3  # insertion at the very start
    assert length_change(3, 5, 7) == 5 and length_change(5, 5, 2) == 2 and length_change(3, 6, 0) == -3
    assert shift_positions({1: "a", 3: "b", 8: "c"}, 2, 4, 0) == {1: "a", 6: "c"}


def test_a_span_after_the_edit_moves_as_its_positions_do():
    for start, end, new_len in _edits(5, 4):
        for a in range(end, 9):
            for b in range(a + 1, 10):
                moved = shift_positions({p: p for p in range(a, b)}, start, end, new_len)
                (s, e), = moved_span(a, b, start, end, new_len)
                assert list(range(s, e)) == sorted(moved), (a, b, start, end, new_len)
                assert (s, e) == (a + length_change(start, end, new_len), b + length_change(start, end, new_len))


@given(edit_and_position(), st.integers(1, 50))
def test_a_span_after_the_edit_moves_with_the_engine_on_large_positions(case, width):
    position, start, end, new_len = case
    a = max(position, end)
    moved = shift_positions({p: p for p in range(a, a + width)}, start, end, new_len)
    assert moved_span(a, a + width, start, end, new_len) == [(min(moved), max(moved) + 1)]


def test_a_span_across_the_edit_keeps_its_parts_outside_it():
    """What a released edit pin keeps: each part outside the replaced span, at the engine's positions."""
    for start, end, new_len in _edits(6, 3):
        for a in range(0, 8):
            for b in range(a + 1, 9):
                parts = moved_span(a, b, start, end, new_len)
                kept = shift_positions({p: p for p in range(a, b)}, start, end, new_len)
                assert sorted(p for s, e in parts for p in range(s, e)) == sorted(kept), (a, b, start, end, new_len)
                assert all(s < e for s, e in parts)
    assert moved_span(2, 8, 4, 6, 1) == [(2, 4), (5, 7)]  # both sides of a shorter replacement
    assert moved_span(4, 6, 4, 6, 3) == []  # wholly replaced
    assert moved_span(2, 6, 4, 4, 2) == [(2, 4), (6, 8)]  # an insertion splits it
