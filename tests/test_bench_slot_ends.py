"""bench.slot_ends: where template fills end, counted over slots."""

from __future__ import annotations

import pytest

from bench import slot_ends
from engine import checkpoint
from engine.tokenizer import EOS


@pytest.fixture(scope="module")
def ck():
    return checkpoint.load("assets/tiny")


def test_tally_counts_ended_slots_their_share_and_full_stops(ck) -> None:
    enc = ck.tokenizer.encode
    stop = enc(" pump replaced .")
    open_ = enc(" pump")
    fills = [
        stop + [EOS] * len(stop),      # ended on a full stop, text half the slot
        open_ + [EOS] * (3 * len(open_)),  # ended, no full stop, a quarter of the slot
        stop,                          # runs to the slot's end, ends a sentence
        open_ * 2,                     # runs to the end, mid-sentence
    ]
    r = slot_ends.tally(ck, fills)
    assert r["slots"] == 4
    assert r["ended"] == pytest.approx(0.5)
    assert r["kept"] == pytest.approx((0.5 + 0.25) / 2)
    assert r["on_stop"] == pytest.approx(0.5)
    assert r["sentence"] == pytest.approx(0.5)


def test_cli_prints_one_line_per_setting(capsys) -> None:
    assert slot_ends.main(["--model", "assets/tiny", "--seeds", "1", "--specs", "", "steps=2"]) == 0
    out = capsys.readouterr().out
    assert "| model settings | 24 |" in out and "| steps=2 | 24 |" in out


def test_cli_refuses_a_bad_setting(capsys) -> None:
    with pytest.raises(SystemExit):
        slot_ends.main(["--model", "assets/tiny", "--specs", "steps=0"])
    assert "steps" in capsys.readouterr().err
