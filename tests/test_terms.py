"""engine.terms: a phrase found by text, as whole tokens and whole words, in any case by default."""

from __future__ import annotations

from pathlib import Path

import pytest

from engine.terms import find_term
from engine.tokenizer import Tokenizer

TOKENIZER = Path(__file__).resolve().parent.parent / "assets" / "model" / "tokenizer.json"


@pytest.fixture(scope="module")
def tok() -> Tokenizer:
    return Tokenizer.load(TOKENIZER)


def found(tok: Tokenizer, text: str, term: str, **kw) -> list[str]:
    ids = tok.encode(text)
    return [tok.decode(ids[a:b]) for a, b in find_term(tok.piece_bytes(ids), term, **kw)]


def test_any_case_by_default_and_exact_case_on_request(tok):
    text = "NATURE OF CONDITION: hydraulic pump leak. Hydraulic Pump replaced; HYDRAULIC PUMP ok."
    assert found(tok, text, "hydraulic pump") == [" hydraulic pump", " Hydraulic Pump", " HYDRAULIC PUMP"]
    assert found(tok, text, "Hydraulic Pump", match_case=True) == [" Hydraulic Pump"]
    assert found(tok, text, "  hydraulic pump ") == found(tok, text, "hydraulic pump")  # outer spaces ignored


def test_only_whole_words(tok):
    assert found(tok, "the pumps and the pump, pumpx pump.", "pump") == [" pump", " pump"]
    assert found(tok, "beamed beam", "beam") == [" beam"]
    assert found(tok, "corrosion", "rosion") == []


def test_spans_cover_the_tokens_and_never_overlap(tok):
    text = "aft bay aft bay aft"
    ids = tok.encode(text)
    spans = find_term(tok.piece_bytes(ids), "aft bay")
    assert len(spans) == 2 and spans[0][1] <= spans[1][0]
    assert all(tok.decode(ids[a:b]).strip().lower() == "aft bay" for a, b in spans)


def test_nothing_for_blank_or_absent_terms(tok):
    ids = tok.encode("torque wrench")
    assert find_term(tok.piece_bytes(ids), "   ") == []
    assert find_term(tok.piece_bytes(ids), "spanner") == []
    assert find_term([], "x") == []
