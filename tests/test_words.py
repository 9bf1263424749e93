"""engine.words: broken words are found and mended from x̂0; held tokens and good words are kept."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from engine import checkpoint
from engine.build import build_model
from engine.config import DiffusionConfig, SamplerConfig
from engine.diffusion import make_diffusion
from engine.sampler import sample
from engine.tiny import build_tiny_tokenizer, corpus, tiny_config
from engine.tokenizer import BOS, EOS, MASK, PAD
from engine.words import WordRule, build_lexicon, words


@pytest.fixture(scope="module")
def tok():
    return build_tiny_tokenizer()


@pytest.fixture(scope="module")
def rule(tok):
    return WordRule(tok, build_lexicon(corpus()))


def ids_of(tok, pieces: list[str]) -> list[int]:
    out = []
    for p in pieces:
        ids = tok.encode(p)
        assert len(ids) == 1, f"{p!r} is not one token of the tiny tokenizer: {ids}"
        out.extend(ids)
    return out


def test_words_are_lower_cased_letter_and_digit_runs() -> None:
    assert words("Found SRM 51-72-11, crack_x") == ["found", "srm", "51", "72", "11", "crack", "x"]


def test_broken_spans_find_glued_pieces_that_are_not_words(tok, rule) -> None:
    ids = tok.encode(" the pump pressure")
    assert rule.broken_spans(ids) == []
    # " pump" followed by a piece that glues onto it: "pumpe..." is no word of the lexicon
    glue = next(i for i in range(4, tok.vocab_size) if rule.text[i][:1].isalpha() and not rule.opener[i]
                and "pump" + words(rule.text[i])[0] not in rule.lexicon)
    spans = rule.broken_spans([*tok.encode(" the pump"), glue])
    assert spans and spans[0][-1] == len(tok.encode(" the pump"))


def test_repair_replaces_free_tokens_of_broken_words_with_the_best_opener(tok, rule) -> None:
    good = tok.encode(" the")
    glue = next(i for i in range(4, tok.vocab_size) if rule.text[i][:1].isalpha() and not rule.opener[i]
                and "the" + words(rule.text[i])[0] not in rule.lexicon)
    tokens = torch.tensor([*good, glue, *good])  # " the" + glue + " the"
    L, V = tokens.numel(), tok.vocab_size
    held = torch.zeros(L, dtype=torch.bool)
    free_idx = torch.arange(L)
    weights = torch.rand(L, V, generator=torch.Generator().manual_seed(0))
    out = rule.repair(tokens, held, weights, free_idx)
    assert rule.broken_spans(out.tolist()) == []
    assert out[-1] == tokens[-1], "a token outside every broken word is not touched"
    for p in range(len(good) + 1):
        if out[p] != tokens[p]:
            best = torch.where(rule.opener, weights[p], torch.full((V,), -1.0)).argmax()
            assert out[p] == best


def test_repair_never_changes_held_tokens(tok, rule) -> None:
    glue = next(i for i in range(4, tok.vocab_size) if rule.text[i][:1].isalpha() and not rule.opener[i])
    tokens = torch.tensor([glue, glue, glue])
    held = torch.tensor([True, False, True])
    free_idx = torch.tensor([1])
    weights = torch.rand(1, tok.vocab_size, generator=torch.Generator().manual_seed(1))
    out = rule.repair(tokens, held, weights, free_idx)
    assert out[0] == glue and out[2] == glue
    assert bool(rule.opener[out[1]])


def test_whole_words_sampling_leaves_no_broken_word_and_keeps_pins(tok, rule, tmp_path) -> None:
    torch.manual_seed(0)
    cfg = tiny_config(tok.vocab_size)
    model = build_model(cfg).eval()
    diffusion = make_diffusion(DiffusionConfig(), tok.vocab_size, tok.mask_id, forbidden_ids=tok.special_ids)
    pins = {3: ids_of(tok, [" the"])[0]}
    for commit in (False, True):
        cfg = SamplerConfig(steps=6, seed=3, whole_words=True, commit=commit)
        steps = list(sample(model, diffusion, cfg, length=24, pins=pins, words=rule))
        assert rule.broken_spans(steps[-1].tokens.tolist()) == []
        assert all(int(s.tokens[3]) == pins[3] for s in steps)
        again = list(sample(model, diffusion, cfg, length=24, pins=pins, words=rule))
        assert all(a.same_as(b) for a, b in zip(steps, again)), "the rule keeps steps reproducible"
    plain = list(sample(model, diffusion, SamplerConfig(steps=6, seed=3), length=24, pins=pins))
    assert rule.broken_spans(plain[-1].tokens.tolist()), "an untrained model does break words without the rule"


def test_whole_words_without_a_rule_is_refused(tok) -> None:
    model = nn.Linear(1, 1)
    diffusion = make_diffusion(DiffusionConfig(), tok.vocab_size, tok.mask_id)
    with pytest.raises(ValueError, match="word rule"):
        sample(model, diffusion, SamplerConfig(whole_words=True), length=4)


def test_checkpoint_carries_the_lexicon_and_its_rule(tok, tmp_path) -> None:
    cfg = tiny_config(tok.vocab_size)
    model = build_model(cfg)
    checkpoint.save(tmp_path / "m", model, cfg, tok)
    assert checkpoint.load(tmp_path / "m").words is None
    before = checkpoint.verify(tmp_path / "m")
    after = checkpoint.amend(tmp_path / "m", lexicon=build_lexicon(corpus()))
    assert after != before, "the lexicon is part of the model's identity"
    ck = checkpoint.load(tmp_path / "m")
    assert ck.words is not None and "pump" in ck.words.lexicon
    (tmp_path / "m" / "lexicon.txt").write_text("tampered\n")
    with pytest.raises(checkpoint.CheckpointError, match="lexicon.txt"):
        checkpoint.load(tmp_path / "m")


def test_after_held_clause_ends_only_spaced_tokens_are_drawn(tok, rule) -> None:
    colon = tok.encode(":")
    assert len(colon) == 1
    tokens = torch.tensor([colon[0], 5, 6, colon[0], 7])
    held = torch.tensor([True, False, False, False, False])
    free_idx = torch.tensor([1, 2, 3, 4])
    weights = torch.ones(4, tok.vocab_size)
    rule.space_after_held_clause(weights, tokens, held, free_idx)
    assert torch.equal(weights[0] > 0, rule.spaced), "right after the held ':' only spaced tokens remain"
    assert bool((weights[1:] == 1).all()), "after free tokens (even a free ':') nothing changes"
    assert bool(weights[0, EOS] > 0), "a fill may end right after a clause end: <eos> glues nothing on"
    assert not any(rule.spaced[i] for i in (PAD, MASK, BOS)), "the other special ids are not openings"


def test_a_glued_piece_right_after_noise_is_broken(tok, rule) -> None:
    the = tok.encode(" the")
    glue = next(i for i in range(4, tok.vocab_size) if rule.text[i][:1].isalpha() and words(rule.text[i])[0] in rule.lexicon)
    assert rule.broken_spans([-1, glue]) == [[1]], "it would join whatever the noise becomes"
    assert rule.broken_spans([-1, *the]) == [], "a token that opens its word may follow noise"


def test_avoid_labels_keeps_the_templates_capitalised_words_out_of_free_positions(tok, rule) -> None:
    from engine.template import expand

    layout = expand("Equipment: {{slot:6}}\nAction taken: {{slot:6}}", tok)
    labels = list(layout.pins.values())
    avoid = rule.label_ids(labels)
    assert {"Equipment", "Action"} <= {rule.text[i].strip() for i in avoid}
    assert all(any(c.isupper() for c in rule.text[i]) for i in avoid)

    class LabelLover(nn.Module):  # x̂0 puts most mass on the label tokens
        def forward(self, x_t, t, clean):
            logits = torch.zeros(x_t.shape + (tok.vocab_size,))
            logits[..., avoid] = 6.0
            return logits

    diffusion = make_diffusion(DiffusionConfig(), tok.vocab_size, tok.mask_id, forbidden_ids=tok.special_ids)
    cfg = SamplerConfig(steps=4, seed=0, commit=True, avoid_labels=True)
    last = list(sample(LabelLover(), diffusion, cfg, length=layout.length, pins=layout.pins, words=rule, labels=labels))[-1]
    free = [p for p in range(layout.length) if p not in layout.pins]
    assert not set(last.tokens[free].tolist()) & set(avoid)
    off = list(sample(LabelLover(), diffusion, SamplerConfig(steps=4, seed=0, commit=True), length=layout.length,
                      pins=layout.pins, words=rule, labels=labels))[-1]
    assert set(off.tokens[free].tolist()) & set(avoid), "without the option the labels are echoed"


def test_the_shipped_model_drafts_whole_words_at_its_own_settings() -> None:
    import dataclasses
    from pathlib import Path

    from engine.template import expand

    ck = checkpoint.load(Path(__file__).resolve().parent.parent / "assets" / "model")
    assert ck.words is not None and ck.sampler_cfg.whole_words and ck.sampler_cfg.commit
    text = (Path(__file__).resolve().parent.parent / "assets" / "templates" / "shift_handover.txt").read_text()
    layout = expand(text, ck.tokenizer)
    cfg = dataclasses.replace(ck.sampler_cfg, steps=8, seed=1)
    last = list(sample(ck.model, ck.diffusion(), cfg, length=layout.length, pins=layout.pins, words=ck.words,
                       labels=list(layout.pins.values())))[-1]
    assert all(int(last.tokens[p]) == v for p, v in layout.pins.items())
    free_broken = [s for s in ck.words.broken_spans(last.tokens.tolist()) if any(p not in layout.pins for p in s)]
    assert free_broken == [], [ck.tokenizer.decode([int(last.tokens[p]) for p in s]) for s in free_broken]


def test_amend_cli_sets_sampler_defaults_and_lexicon_and_refuses_bad_specs(tok, tmp_path, capsys) -> None:
    import json

    cfg = tiny_config(tok.vocab_size)
    checkpoint.save(tmp_path / "m", build_model(cfg), cfg, tok)
    (tmp_path / "corpus").mkdir()
    (tmp_path / "corpus" / "train.jsonl").write_text(json.dumps({"text": "Found the pump leaking."}) + "\n")
    with pytest.raises(SystemExit) as exc:
        checkpoint.main(["amend", "--model", str(tmp_path / "m"), "--sampler", "colour=red"])
    assert exc.value.code == 2 and "bad sampler setting" in capsys.readouterr().err
    assert checkpoint.main(["amend", "--model", str(tmp_path / "m"), "--sampler", "steps=7,commit=1",
                            "--lexicon-from", str(tmp_path / "corpus")]) == 0
    ck = checkpoint.load(tmp_path / "m")
    assert (ck.sampler_cfg.steps, ck.sampler_cfg.commit) == (7, True)
    assert ck.words is not None and ck.words.lexicon == {"found", "the", "pump", "leaking"}
    assert capsys.readouterr().out.strip() == ck.checksum


def test_label_phrases_are_the_labels_of_two_words_or_more(tok, rule) -> None:
    from engine.template import expand

    text = "SERVICE REPORT\nAircraft: {{slot:4}}\nAction taken: {{slot:4}}\nDiscrepancy / corrective action: {{slot:4}}"
    layout = expand(text, tok)
    assert rule.label_phrases(list(layout.pins.values())) == [
        ("service", "report"), ("action", "taken"), ("discrepancy", "corrective", "action")]


def test_a_phrase_is_completed_only_by_its_own_words_in_any_case(tok, rule) -> None:
    phrases = [("part", "name")]

    def check(text: str, at: str) -> bool:  # does the piece starting `at` complete a phrase?
        ids = tok.encode(text)
        pieces = [rule.text[i] for i in ids]
        k = next(j for j in range(len(ids)) if "".join(pieces[:j + 1]).endswith(at) or pieces[j].startswith(at))
        return rule.completes_phrase(ids[:k], ids[k], ids[k + 1:], phrases)

    assert check(" found: part name slide", " n")  # a word of several pieces, lower case
    assert check(" found: PART NAME slide", " N")
    assert not check(" found: part names slide", " n")  # another word
    assert not check(" found: part valve name", " v")
    assert not rule.completes_phrase(tok.encode(" part"), tok.encode(" slide")[0], [], phrases)


def test_avoid_labels_keeps_multi_word_labels_out_of_slots_in_any_case(tok, rule) -> None:
    from engine.template import expand

    layout = expand("Equipment: {{slot:18}}\nAction taken: {{slot:18}}", tok)
    labels = list(layout.pins.values())
    seq = tok.encode(" action taken")  # lower-case pieces: no capitalised label token among them

    class PhraseLover(nn.Module):  # x̂0 at position p: the p-th piece of " action taken action taken ..."
        def forward(self, x_t, t, clean):
            logits = torch.zeros(x_t.shape + (tok.vocab_size,))
            for p in range(x_t.shape[-1]):
                logits[..., p, seq[p % len(seq)]] = 9.0
            return logits

    diffusion = make_diffusion(DiffusionConfig(), tok.vocab_size, tok.mask_id, forbidden_ids=tok.special_ids)
    slots = [(s.start, s.start + s.length) for s in layout.slots]

    def fills(avoid: bool) -> list[str]:
        cfg = SamplerConfig(steps=6, seed=0, commit=True, avoid_labels=avoid)
        last = list(sample(PhraseLover(), diffusion, cfg, length=layout.length, pins=layout.pins, words=rule,
                           labels=labels))[-1]
        return [" ".join(words(tok.decode(last.tokens[a:b].tolist()))) for a, b in slots]

    assert any("action taken" in f for f in fills(False)), "without the option the label is written out"
    kept = fills(True)
    assert not any("action taken" in f for f in kept), kept
    assert any("action" in f for f in kept), "the words themselves stay allowed"


def test_repair_does_not_write_a_label_out(tok, rule) -> None:
    openers = [i for i in range(4, tok.vocab_size) if rule.opener[i] and len(words(rule.text[i])) == 1]
    last_word, other = openers[0], openers[1]
    first = tok.encode(" check")
    phrases = [("check", words(rule.text[last_word])[0])]
    glue = next(i for i in range(4, tok.vocab_size) if rule.text[i][:1].isalpha() and not rule.opener[i]
                and "check" + words(rule.text[i])[0] not in rule.lexicon)
    tokens = torch.tensor([*first, glue])  # " check" + a glued piece: a broken word
    L, V = tokens.numel(), tok.vocab_size
    held = torch.zeros(L, dtype=torch.bool)
    held[: len(first)] = True  # " check" is held (a pin): only the glued piece can be mended
    weights = torch.full((L, V), 0.01)
    weights[:, last_word], weights[:, other] = 5.0, 4.0
    free_idx = torch.arange(len(first), L)
    plain = rule.repair(tokens, held, weights[free_idx], free_idx)
    assert plain[-1] == last_word and rule.completes_phrase(plain[:-1].tolist(), last_word, [], phrases)
    kept = rule.repair(tokens, held, weights[free_idx], free_idx, phrases=phrases)
    assert kept[-1] != last_word and not rule.completes_phrase(kept[:-1].tolist(), int(kept[-1]), [], phrases)


def _spans_char_by_char(rule: WordRule, ids: list[int]) -> list[list[int]]:
    """broken_spans read off its definition one character at a time (the rule reads runs)."""
    spans, word, span, blind, prev_noise = [], "", [], False, False
    for pos, tid in enumerate(ids):
        if tid < 0:
            if word and (blind or word.lower() not in rule.lexicon):
                spans.append(span)
            word, span, blind, prev_noise = "", [], False, True
            continue
        for i, ch in enumerate(rule.text[tid]):
            if ch.isalnum():
                if not word:
                    blind = prev_noise and i == 0
                word += ch
                if not span or span[-1] != pos:
                    span = [*span, pos]
            else:
                if word and (blind or word.lower() not in rule.lexicon):
                    spans.append(span)
                word, span, blind = "", [], False
        prev_noise = False
    if word and (blind or word.lower() not in rule.lexicon):
        spans.append(span)
    return spans


@pytest.mark.parametrize("seed", range(20))
def test_broken_spans_read_by_runs_are_those_read_by_characters(tok, rule, seed: int) -> None:
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(-1, tok.vocab_size, (60,), generator=g).tolist()
    assert rule.broken_spans(ids) == _spans_char_by_char(rule, ids)
