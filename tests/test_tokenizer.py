"""Byte-level BPE wrapper: specials, round trips, per-token pieces, file errors."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from engine.tiny import build_tiny_tokenizer
from engine.tokenizer import SPECIALS, Tokenizer, TokenizerError


@pytest.fixture(scope="module")
def tok() -> Tokenizer:
    return build_tiny_tokenizer()


def test_specials_have_fixed_ids(tok: Tokenizer) -> None:
    assert [tok.pad_id, tok.mask_id, tok.bos_id, tok.eos_id] == [0, 1, 2, 3]
    assert tok.special_ids == frozenset(range(len(SPECIALS)))
    assert tok.vocab_size == 512


def test_specials_are_not_produced_by_text(tok: Tokenizer) -> None:
    ids = tok.encode("<mask> <pad> plain text")
    assert not set(ids) & tok.special_ids
    assert tok.decode(ids) == "<mask> <pad> plain text"


def test_decode_drops_specials(tok: Tokenizer) -> None:
    ids = tok.encode("pump")
    assert tok.decode([tok.bos_id, *ids, tok.mask_id, tok.eos_id]) == "pump"


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=80))
def test_round_trip_any_text(text: str) -> None:
    tok = _shared()
    ids = tok.encode(text)
    assert tok.decode(ids) == text
    assert "".join(tok.pieces(ids)) == text


@settings(max_examples=200, deadline=None)
@given(st.lists(st.integers(min_value=0, max_value=511), max_size=60))
def test_pieces_join_to_decode_for_any_ids(ids: list[int]) -> None:
    # a sampler may emit any id sequence, including bytes that are not valid UTF-8
    tok = _shared()
    pieces = tok.pieces(ids)
    assert len(pieces) == len(ids)
    assert "".join(pieces) == tok.decode(ids)


def test_multibyte_character_split_across_tokens(tok: Tokenizer) -> None:
    text = "日本語のテスト"  # rare in the training text: split into byte tokens
    ids = tok.encode(text)
    assert len(ids) > len(text)
    pieces = tok.pieces(ids)
    assert "".join(pieces) == text
    assert "" in pieces  # the leading bytes of a character show nothing until it is complete


def test_save_load_same_encoding(tok: Tokenizer, tmp_path) -> None:
    tok.save(tmp_path / "t.json")
    again = Tokenizer.load(tmp_path / "t.json")
    s = "Removed and replaced the actuator."
    assert again.encode(s) == tok.encode(s)
    assert again.to_json() == tok.to_json()


def test_load_errors_name_the_file(tmp_path) -> None:
    with pytest.raises(TokenizerError, match="not found"):
        Tokenizer.load(tmp_path / "missing.json")
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(TokenizerError, match="bad.json"):
        Tokenizer.load(bad)


def test_vocab_too_small_is_refused() -> None:
    with pytest.raises(TokenizerError, match="at least"):
        Tokenizer.train(["x"], vocab_size=100)


_TOK: list[Tokenizer] = []


def _shared() -> Tokenizer:
    if not _TOK:
        _TOK.append(build_tiny_tokenizer())
    return _TOK[0]
