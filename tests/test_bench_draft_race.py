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


def test_the_causal_model_under_the_label_rule_gets_the_samplers_cuts(tmp_path) -> None:
    from bench.draft_quality import Job, ar_draft
    from engine import template
    from engine.config import SamplerConfig
    from engine.tiny import corpus
    from engine.words import build_lexicon

    tok = build_tiny_tokenizer()
    cfg = dataclasses.replace(tiny_config(tok.vocab_size), arch="causal")
    torch.manual_seed(0)
    checkpoint.save(tmp_path / "ar", build_model(cfg), cfg, tok, name="tiny-causal", lexicon=build_lexicon(corpus()))
    ar = checkpoint.load(tmp_path / "ar")
    text = "Aircraft: {{slot:4}}\nBrake pump: {{slot:6}}\n"
    job = Job("t", layout=template.expand(text, ar.tokenizer), labels=(("brake", "pump"),))
    calls: list[dict] = []
    real = ar.model.generate

    def spy(*args, **kwargs):
        calls.append(kwargs)
        return real(*args, **kwargs)

    ar.model.generate = spy
    fills, _, _ = ar_draft(ar, SamplerConfig(temperature=0.8), job, 0, [], 3, labels=True)
    assert len(fills) == 2 and len(calls) == 2
    banned, veto = calls[0]["banned"], calls[0]["veto"]
    assert set(banned.tolist()) == set(ar.words.label_ids(list(job.layout.pins.values())))
    assert "Aircraft" in {ar.tokenizer.decode([i]).strip() for i in banned.tolist()}
    brake, pump = ar.tokenizer.encode(" brake"), ar.tokenizer.encode(" pump")
    assert veto(brake + pump[:-1], pump[-1]), "a draw that writes out 'brake pump' is drawn again"
    assert not veto(ar.tokenizer.encode(" the") + pump[:-1], pump[-1])
    calls.clear()
    ar_draft(ar, SamplerConfig(temperature=0.8), job, 0, [], 3)
    assert calls[0]["banned"] is None and calls[0]["veto"] is None, "without the rule the causal model is left alone"
