"""The position rule after a length-changing edit: the engine's copy and storage's copy agree.

Storage may not import the engine, so it keeps its own `shift_position`; the two must give the
same answer for every position and edit, and storage's move of a pin after the edit must match
the engine's move of the pinned positions one by one."""

from __future__ import annotations

import itertools

from engine.positions import shift_position as engine_shift
from engine.positions import shift_positions
from storage.repository.edits import _moved_span
from storage.repository.edits import shift_position as storage_shift
from storage.models import Pin


def test_both_copies_agree_on_every_small_case():
    cases = 0
    for start, end, new_len in itertools.product(range(7), range(7), range(5)):
        if end < start:
            continue
        for pos in range(9):
            assert engine_shift(pos, start, end, new_len) == storage_shift(pos, start, end, new_len), (pos, start, end, new_len)
            cases += 1
    assert cases > 1000


def test_the_rule_itself():
    assert engine_shift(2, 3, 5, 7) == 2  # before the span: unchanged
    assert engine_shift(3, 3, 5, 7) is None and engine_shift(4, 3, 5, 7) is None  # inside: gone
    assert engine_shift(5, 3, 5, 7) == 10  # from the end on: moved by 7 - 2
    assert engine_shift(5, 5, 5, 2) == 7  # an insertion moves the position it lands on
    assert engine_shift(6, 3, 6, 0) == 3  # a deletion pulls the rest back
    assert shift_positions({1: "a", 3: "b", 8: "c"}, 2, 4, 0) == {1: "a", 6: "c"}


def test_a_pin_after_the_edit_moves_as_its_positions_do():
    for start, end, new_len in itertools.product(range(5), range(5), range(4)):
        if end < start:
            continue
        for a in range(end, 8):
            for b in range(a + 1, 9):
                pin = Pin(span_start=a, span_end=b)
                moved = shift_positions({p: p for p in range(a, b)}, start, end, new_len)
                (s, e), = _moved_span(pin, start, end, new_len)
                assert list(range(s, e)) == sorted(moved), (a, b, start, end, new_len)
