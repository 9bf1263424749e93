"""bench.judge: a normalised Kneser-Ney trigram and the draft measures; bench.draft_quality's rows."""

from __future__ import annotations

import json
import math

import pytest

from bench import draft_quality
from bench.judge import Judge, cut_like, words
from engine.config import SamplerConfig, parse_sampler_spec

DOCS = [
    "found corrosion on the floor beam, replaced the beam per srm 53-10-01.",
    "crew reported smoke in the aft galley; found a chafed wire and repaired it.",
    "found the hydraulic pump leaking, replaced the pump and tested the system.",
    "replaced the left main gear actuator per amm 32-31-00, leak check good.",
]


@pytest.fixture(scope="module")
def judge() -> Judge:
    return Judge(DOCS)


def test_probabilities_sum_to_one_in_every_context(judge) -> None:
    vocab = sorted(judge.vocab) + ["<unk>"]
    for u, v in [("<s>", "<s>"), ("found", "the"), ("replaced", "the"), ("nowhere", "seen"), ("the", "zebra")]:
        assert math.isclose(sum(judge.prob(u, v, w) for w in vocab), 1.0, rel_tol=1e-9), (u, v)


def test_seen_text_scores_better_than_shuffled_and_oov_words(judge) -> None:
    real = judge.score([["found the hydraulic pump leaking"]])
    shuffled = judge.score([["leaking pump found hydraulic the"]])
    unseen = judge.score([["qwzx vbnm plok trew"]])
    assert real.ppl < shuffled.ppl < unseen.ppl
    assert real.oov == 0.0 and unseen.oov == 1.0


def test_measures_on_a_hand_made_draft(judge) -> None:
    s = judge.score([["pump pump the pump", "found beam"]])
    assert s.words == 6
    # repeats: the second "pump" (1 before) and the last "pump" (3 before) -> 2 of 6
    assert math.isclose(s.repeat, 2 / 6)
    # bigrams within fills: (pump pump) (pump the) (the pump) (found beam): 4 distinct of 4
    assert s.distinct2 == 1.0
    counts = {"pump": 3, "the": 1, "found": 1, "beam": 1}
    assert math.isclose(s.entropy, -sum(c / 6 * math.log2(c / 6) for c in counts.values()))


def test_version_names_the_training_text() -> None:
    assert Judge(DOCS).version == Judge(DOCS).version
    assert Judge(DOCS).version != Judge(DOCS[:-1]).version


def test_words_and_cut_like() -> None:
    assert words("Replaced SRM 53-10-01, OK.") == ["replaced", "srm", "53", "10", "01", "ok"]
    out = cut_like(DOCS, [3, 2], start=1)
    assert out == ["crew reported smoke", "in the"]
    assert len(cut_like(DOCS, [60], start=3)[0].split()) == 60, "runs over into the next documents"


def test_sampler_spec_parsing() -> None:
    cfg = parse_sampler_spec("steps=64, commit=1, temperature_end=0.5, whole_words=true", SamplerConfig())
    assert (cfg.steps, cfg.commit, cfg.temperature_end, cfg.whole_words) == (64, True, 0.5, True)
    assert parse_sampler_spec("temperature_end=none", cfg).temperature_end is None
    assert parse_sampler_spec("free_steps=16", cfg).free_steps == 16
    assert parse_sampler_spec("free_steps=none", SamplerConfig(free_steps=16)).free_steps is None
    # steps alone are one count for every kind of draft; both may be set together
    assert parse_sampler_spec("steps=12", SamplerConfig(free_steps=16)).free_steps is None
    assert parse_sampler_spec("steps=12,free_steps=20", SamplerConfig()).free_steps == 20
    assert parse_sampler_spec("temperature=0.5", SamplerConfig(free_steps=16)).free_steps == 16
    for bad in ("seed=3", "colour=red", "steps", "commit=maybe", "steps=x", "free_steps=1.5"):
        with pytest.raises(ValueError, match="bad sampler setting"):
            parse_sampler_spec(bad, SamplerConfig())


@pytest.mark.slow
def test_bench_runs_main_and_sweep_rows_on_the_tiny_model(tmp_path, capsys) -> None:
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    for split in ("train", "test"):
        (corpus / f"{split}.jsonl").write_text("".join(json.dumps({"text": d}) + "\n" for d in DOCS))
    out = tmp_path / "q.json"
    rc = draft_quality.main(["--model", "assets/tiny", "--data", str(corpus), "--templates", "assets/templates/shift_handover.txt",
                             "--free", "24", "--drafts", "2", "--threads", "1", "--sweep", "steps=2", "steps=2,commit=1",
                             "--sweep-rows", "shift_handover", "--sweep-drafts", "2", "--json", str(out)])
    assert rc == 0
    text = capsys.readouterr().out
    assert "| shift_handover |" in text and "| free-24 |" in text and "| steps=2,commit=1 |" in text
    data = json.loads(out.read_text())
    assert [r["row"] for r in data["main"]] == ["shift_handover", "free-24"]
    twins = draft_quality.REAL_PER_DRAFT
    assert all(r["model"]["drafts"] == 2 and r["real"]["words"] == twins * r["model"]["words"] for r in data["main"])
    assert len(data["sweep"]) == 2


def test_bench_drafts_free_rows_at_the_models_free_steps(monkeypatch) -> None:
    """The bench writes drafts as a user gets them: a free row at the model's free_steps, a
    template at its steps (engine.config.for_kind)."""
    from engine import checkpoint, template

    ck = checkpoint.load("assets/tiny")
    seen: list[int] = []
    real = draft_quality.sample

    def spy(model, diffusion, cfg, **kw):
        seen.append(cfg.steps)
        return real(model, diffusion, cfg, **kw)

    monkeypatch.setattr(draft_quality, "sample", spy)
    cfg = SamplerConfig(steps=2, free_steps=3)
    layout = template.expand("REPORT\nWork: {{slot:4}}", ck.tokenizer)
    for job in (draft_quality.Job("tpl", layout=layout), draft_quality.Job("free-12", length=12)):
        draft_quality.sfdlm_draft(ck, cfg, job, 0, DOCS, 2)
    assert seen == [2, 3]


def test_template_labels_and_echo_rate() -> None:
    labels = draft_quality.template_labels("REPORT\nAircraft: {{slot:4}}\nPart name: {{slot:3}}\nNature of condition: {{slot:5}}")
    assert labels == (("part", "name"), ("nature", "of", "condition"))
    drafts = [["the part name : valve", "found corrosion"], ["nature of condition other", "part was named"]]
    assert draft_quality.echo_rate(drafts, labels) == 0.5


def test_samples_writes_every_template_and_seed(tmp_path) -> None:
    from bench import samples

    out = tmp_path / "samples.md"
    assert samples.main(["--model", "assets/tiny", "--seeds", "2", "--out", str(out), "--threads", "1"]) == 0
    text = out.read_text()
    for name in ("corrective_action", "shift_handover"):
        assert f"## {name}" in text
    assert text.count("**Seed 0**") == text.count("**Seed 1**") == 5 and "**Seed 2**" not in text


def test_end_rate_is_the_share_of_fills_that_end_a_sentence() -> None:
    drafts = [["found crack at sta 540 .", "replaced the"], ["", "ops check ok! "]]
    assert draft_quality.end_rate(drafts) == pytest.approx(2 / 3)
    assert draft_quality.end_rate([[""]]) != draft_quality.end_rate([[""]])  # nan: nothing to rate
