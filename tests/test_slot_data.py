"""engine.slot_data: template-shaped training rows whose fills end in <eos>, and --slot-share."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from engine import checkpoint
from engine.slot_data import SlotMix, sentences
from engine.tiny import SENTENCES, build_tiny_tokenizer
from engine.tokenizer import EOS
from engine.train import main

L = 96


@pytest.fixture(scope="module")
def tok():
    return build_tiny_tokenizer()


@pytest.fixture(scope="module")
def mix(tok) -> SlotMix:
    return SlotMix(list(SENTENCES), tok, L, 0.5)


def _fills(ids: list[int], clean: list[bool]) -> list[list[int]]:
    out: list[list[int]] = []
    for q, c in enumerate(clean):
        if not c:
            if q == 0 or clean[q - 1]:
                out.append([])
            out[-1].append(ids[q])
    return out


def test_sentences_keep_their_full_stops() -> None:
    assert sentences("found crack . replaced panel . ops ok") == ["found crack .", "replaced panel .", "ops ok"]
    assert sentences("  ") == []


@pytest.mark.parametrize("seed", range(8))
def test_a_row_is_labels_held_and_fills_of_whole_sentences_then_eos(tok, mix, seed: int) -> None:
    rnd = torch.rand(4 * L, generator=torch.Generator().manual_seed(seed), dtype=torch.float64).tolist()
    ids, clean = mix.row(rnd)
    assert ids.shape == clean.shape == (L,)
    ids_l, clean_l = ids.tolist(), clean.tolist()
    assert not any(t == EOS for t, c in zip(ids_l, clean_l) if c), "labels hold no eos"
    held_text = tok.decode([t for t, c in zip(ids_l, clean_l) if c])
    assert ":" in held_text, "each slot follows a label"
    fills = _fills(ids_l, clean_l)
    assert fills
    for f in fills[:-1]:  # the last one may be cut by the row's end
        if EOS in f:
            e = f.index(EOS)
            assert e > 0 and all(t == EOS for t in f[e:]), "eos is a suffix of its fill"
            assert tok.decode(f[:e]).rstrip().endswith("."), "a fill that ends early ends a sentence"


def test_rows_are_a_function_of_the_generator_and_share_picks_how_many(tok, mix) -> None:
    stream = torch.arange(10, 200).repeat(20)

    def batch(seed: int, m: SlotMix):
        return m.batch(stream, 16, torch.Generator().manual_seed(seed), torch.Generator().manual_seed(9), 0.5)

    def plain(row: torch.Tensor) -> bool:  # a window of the stream: each id one more than the last, or wrapping
        d = (row[1:] - row[:-1]).tolist()
        return all(x in (1, -189) for x in d)

    a, b = batch(1, mix), batch(1, mix)
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    assert not any(plain(row) for row in batch(2, SlotMix(list(SENTENCES), tok, L, 1.0))[0])
    n_plain = sum(plain(row) for row in batch(3, mix)[0])
    assert 0 < n_plain < 16


def test_a_share_outside_its_range_is_refused(tok) -> None:
    with pytest.raises(ValueError, match="share"):
        SlotMix(list(SENTENCES), tok, L, 0.0)
    with pytest.raises(ValueError, match="tight"):
        SlotMix(list(SENTENCES), tok, L, 0.5, tight=1.5)


def _eos_tail(m: SlotMix, seeds: range) -> float:
    """Mean length of the <eos> run of the fills that end early, over the rows of `seeds`."""
    tails = []
    for seed in seeds:
        ids, clean = m.row(torch.rand(4 * L, generator=torch.Generator().manual_seed(seed), dtype=torch.float64).tolist())
        for f in _fills(ids.tolist(), clean.tolist())[:-1]:
            if EOS in f:
                tails.append(len(f) - f.index(EOS))
    assert len(tails) > 20
    return sum(tails) / len(tails)


def test_loose_slots_leave_longer_eos_runs_than_tight_ones(tok) -> None:
    """`tight` is the share of early-ending fills whose slot is sized to the text (up to a third
    more positions); the others keep their whole budget, so their <eos> runs are longer."""
    tight, loose = SlotMix(list(SENTENCES), tok, L, 1.0, tight=1.0), SlotMix(list(SENTENCES), tok, L, 1.0, tight=0.0)
    assert _eos_tail(loose, range(120)) > 1.5 * _eos_tail(tight, range(120))
    for seed in range(40):  # tight: never more than a third of the text's length (at least 2) past its end
        ids, clean = tight.row(torch.rand(4 * L, generator=torch.Generator().manual_seed(seed), dtype=torch.float64).tolist())
        for f in _fills(ids.tolist(), clean.tolist())[:-1]:
            if EOS in f:
                e = f.index(EOS)
                assert len(f) - e <= max(2, e // 3)


def _tiny_run(tmp_path: Path) -> tuple[Path, Path]:
    """(a folder of the tiny sentences as documents, a config of a very small model)."""
    data = tmp_path / "docs"
    data.mkdir()
    for i, s in enumerate(SENTENCES):
        (data / f"r{i}.txt").write_text(s)
    cfg = tmp_path / "cfg.json"
    cfg.write_text(json.dumps({"model": {"d_model": 32, "n_layers": 2, "d_state": 8, "fourier_blocks": 2, "n_heads": 2, "time_dim": 16},
                               "train": {"seq_len": 48, "batch_size": 2, "warmup_steps": 1}}))
    return data, cfg


def test_cli_fine_tunes_with_template_rows_and_records_the_share(tmp_path: Path) -> None:
    data, cfg = _tiny_run(tmp_path)
    assert main(["--data", str(data), "--out", str(tmp_path / "base"), "--config", str(cfg), "--vocab-size", "300",
                 "--max-steps", "1"]) == 0
    assert main(["--data", str(data), "--out", str(tmp_path / "ft"), "--init-from", str(tmp_path / "base" / "model"),
                 "--slot-share", "0.5", "--max-steps", "2", "--seq-len", "48", "--batch-size", "2"]) == 0
    ft = json.loads((tmp_path / "ft" / "model" / "config.json").read_text())
    assert ft["meta"]["train_config"]["slot_share"] == 0.5
    assert ft["meta"]["train_config"]["slot_tight"] == 0.7  # the default, recorded
    assert checkpoint.load(tmp_path / "ft" / "model").model_cfg.d_model == 32


def test_cli_refuses_a_bad_slot_share(tmp_path: Path, capsys) -> None:
    data = tmp_path / "docs"
    data.mkdir()
    (data / "r.txt").write_text(SENTENCES[0])
    with pytest.raises(SystemExit):
        main(["--data", str(data), "--out", str(tmp_path / "o"), "--slot-share", "1.5", "--max-steps", "1", "--vocab-size", "300"])
    assert "share" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["--data", str(data), "--out", str(tmp_path / "o"), "--slot-tight", "0.3", "--max-steps", "1", "--vocab-size", "300"])
    assert "--slot-tight" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["--data", str(data), "--out", str(tmp_path / "o"), "--slot-share", "0.5", "--slot-tight", "2",
              "--max-steps", "1", "--vocab-size", "300"])
    assert "tight" in capsys.readouterr().err


def test_a_model_that_learnt_eos_in_slots_keeps_end_of_slot_through_fine_tunes(tmp_path: Path) -> None:
    """--slot-share writes end_of_slot into the model's sampler settings, and a later fine-tune
    of that model (on plain text, say) keeps it: its weights still write <eos> in slots."""
    data, cfg = _tiny_run(tmp_path)
    common = ["--max-steps", "1", "--seq-len", "48", "--batch-size", "2"]
    assert main(["--data", str(data), "--out", str(tmp_path / "plain"), "--config", str(cfg), "--vocab-size", "300", *common]) == 0
    assert not checkpoint.load(tmp_path / "plain" / "model").sampler_cfg.end_of_slot
    assert main(["--data", str(data), "--out", str(tmp_path / "slots"), "--init-from", str(tmp_path / "plain" / "model"),
                 "--slot-share", "0.5", *common]) == 0
    assert checkpoint.load(tmp_path / "slots" / "model").sampler_cfg.end_of_slot
    assert main(["--data", str(data), "--out", str(tmp_path / "again"), "--init-from", str(tmp_path / "slots" / "model"), *common]) == 0
    assert checkpoint.load(tmp_path / "again" / "model").sampler_cfg.end_of_slot
