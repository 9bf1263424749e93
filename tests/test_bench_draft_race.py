"""bench.draft_race: the causal transformer and SFDLM settings draft the same rows in turn."""

from __future__ import annotations

import dataclasses
import json

import torch

from bench import draft_race
from engine import checkpoint
from engine.build import build_model
from engine.tiny import build_tiny_tokenizer, tiny_config


def _causal(folder) -> None:
    tok = build_tiny_tokenizer()
    cfg = dataclasses.replace(tiny_config(tok.vocab_size), arch="causal")
    torch.manual_seed(0)
    checkpoint.save(folder, build_model(cfg), cfg, tok, name="tiny-causal")


def test_race_times_every_row_for_the_causal_model_and_each_setting(tmp_path, capsys) -> None:
    _causal(tmp_path / "ar")
    out = tmp_path / "race.json"
    rc = draft_race.main(["--model", "assets/tiny", "--ar-model", str(tmp_path / "ar"), "--drafts", "2", "--threads", "1",
                          "--specs", "", "steps=2,commit=1", "--json", str(out)])
    assert rc == 0
    text = capsys.readouterr().out
    assert "| steps=2,commit=1 s (ratio) |" in text and "| model's settings s (ratio) |" in text
    data = json.loads(out.read_text())
    templates = {"corrective_action", "inspection_finding", "maintenance_log_entry", "service_difficulty_report", "shift_handover"}
    assert {r["row"] for r in data["rows"]} == templates
    for r in data["rows"]:
        assert r["causal_s"] > 0 and len(r["sfdlm_s"]) == 2 and all(s > 0 for s in r["sfdlm_s"])


def test_a_bad_setting_is_refused_with_a_message(tmp_path, capsys) -> None:
    _causal(tmp_path / "ar")
    try:
        draft_race.main(["--model", "assets/tiny", "--ar-model", str(tmp_path / "ar"), "--specs", "steps=two"])
    except SystemExit as exc:
        assert exc.code == 2
    else:
        raise AssertionError("a bad spec must exit with status 2")
    assert "steps" in capsys.readouterr().err
