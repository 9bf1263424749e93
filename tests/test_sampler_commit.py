"""engine.sampler's converging options: confidence-ordered commitment and annealed temperature."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from engine.config import SamplerConfig
from engine.commit import commit_target, derive_committed
from engine.sampler import edit_step, resume_from, sample, step_temperature
from test_sampler import FakeDenoiser, make, run, same_runs

L = 20
PINS = {2: 3, 11: 7}


@pytest.fixture()
def model() -> FakeDenoiser:
    return FakeDenoiser(seed=4)


def test_commit_target_reaches_every_writable_position() -> None:
    assert [commit_target(10, k, 4) for k in range(5)] == [0, 3, 5, 8, 10]
    assert commit_target(0, 3, 8) == 0


def test_a_schedule_power_above_one_commits_few_tokens_early_and_the_rest_late() -> None:
    assert [commit_target(10, k, 4, 2.0) for k in range(5)] == [0, 1, 3, 6, 10]
    assert [commit_target(100, k, 10, 2.0) for k in (1, 5, 9, 10)] == [1, 25, 81, 100]
    assert [commit_target(7, k, 3, 0.5) for k in range(4)] == [0, 5, 6, 7]
    assert commit_target(0, 2, 4, 3.0) == 0


@pytest.mark.parametrize("power", [0.1, 0.0, -1.0, 9.0, float("nan"), float("inf")])
def test_a_schedule_power_outside_its_range_is_refused(model, power: float) -> None:
    with pytest.raises(ValueError, match="commit_power"):
        run(model, make("uniform"), SamplerConfig(steps=4, commit=True, commit_power=power), length=L)


@pytest.mark.parametrize("noise,power", [("uniform", 1.0), ("absorbing", 1.0), ("uniform", 2.0), ("absorbing", 2.5)])
def test_committed_tokens_never_change_and_follow_the_schedule(model, noise: str, power: float) -> None:
    cfg = SamplerConfig(steps=6, seed=1, commit=True, commit_power=power)
    steps = run(model, make(noise), cfg, length=L, pins=PINS)
    writable = L - len(PINS)
    prev = steps[0]
    assert not bool(prev.committed.any())
    for st in steps[1:]:
        assert int(st.committed.sum()) == commit_target(writable, st.index, cfg.steps, power)
        assert not bool((st.committed & st.pinned).any()), "pins are held, not committed"
        was = prev.committed
        assert torch.equal(st.tokens[was], prev.tokens[was]), "a committed token is final"
        assert torch.equal(st.confidence[was], prev.confidence[was])
        assert all(int(st.tokens[p]) == v for p, v in PINS.items())
        prev = st
    assert bool((steps[-1].committed | steps[-1].pinned).all())


class PeakedDenoiser(torch.nn.Module):
    """x̂0 is nearly one-hot at the first `sure` positions and flat everywhere else."""

    def __init__(self, sure: int, vocab: int = 11) -> None:
        super().__init__()
        self.sure, self.vocab = sure, vocab

    def forward(self, x_t: torch.Tensor, t: torch.Tensor, clean: torch.Tensor) -> torch.Tensor:
        logits = torch.zeros(x_t.shape + (self.vocab,))
        logits[:, : self.sure, 4] = 30.0
        return logits


def test_commit_takes_the_most_confident_draws_first() -> None:
    cfg = SamplerConfig(steps=4, seed=2, commit=True)
    first = run(PeakedDenoiser(sure=5), make("uniform"), cfg, length=L)[1]
    assert int(first.committed.sum()) == commit_target(L, 1, 4) == 5
    assert first.committed[:5].all(), "the five sure positions are committed first"
    assert first.tokens[:5].tolist() == [4] * 5


def test_commit_runs_are_reproducible_and_resumable(model) -> None:
    cfg = SamplerConfig(steps=8, seed=5, commit=True, temperature=0.9, temperature_end=0.2)
    diffusion = make("uniform")
    full = run(model, diffusion, cfg, length=L, pins=PINS)
    assert same_runs(full, run(model, diffusion, cfg, length=L, pins=PINS))
    for k in (0, 3, 7):
        rest = run(model, diffusion, cfg, start=full[k], pins=PINS)
        assert same_runs(full[k + 1 :], rest), f"resume from step {k}"


@pytest.mark.parametrize("power", [1.0, 2.0])
def test_a_step_without_its_committed_mask_resumes_from_derived_commitment(model, power: float) -> None:
    cfg = SamplerConfig(steps=6, seed=6, commit=True, commit_power=power)
    diffusion = make("uniform")
    full = run(model, diffusion, cfg, length=L, pins=PINS)
    bare = dataclasses.replace(full[3], committed=None)
    derived = derive_committed(bare.confidence, bare.pinned, bare.index, bare.total_steps, power)
    assert int(derived.sum()) == commit_target(L - len(PINS), 3, 6, power)
    rest = run(model, diffusion, cfg, start=bare, pins=PINS)
    assert bool((rest[-1].committed | rest[-1].pinned).all())
    assert torch.equal(rest[0].tokens[derived], bare.tokens[derived])
    assert bool(rest[0].committed[derived].all())
    assert int(rest[0].committed.sum()) == commit_target(L - len(PINS), 4, 6, power), "the run's own schedule"


def test_edits_and_new_pins_carry_the_committed_mask(model) -> None:
    cfg = SamplerConfig(steps=6, seed=7, commit=True)
    diffusion = make("uniform")
    step = run(model, diffusion, cfg, length=L, pins=PINS)[3]
    edited, pins = edit_step(step, PINS, 5, 8, [1, 2])  # 3 tokens -> 2
    assert edited.length == L - 1
    assert torch.equal(edited.committed[:5], step.committed[:5] & ~edited.pinned[:5])
    assert torch.equal(edited.committed[7:], step.committed[8:] & ~edited.pinned[7:])
    assert not bool(edited.committed[5:7].any())
    rest = run(model, diffusion, cfg, start=edited, pins=pins)
    assert [int(rest[-1].tokens[p]) for p in (5, 6)] == [1, 2]
    kept = edited.committed
    assert torch.equal(rest[-1].tokens[kept], edited.tokens[kept])
    # a new pin on a committed position holds it (pins win) and uncommits it
    pos = int(step.committed.nonzero()[0])
    again = resume_from(step, step.tokens, {**PINS, pos: 9})
    assert bool(again.pinned[pos]) and not bool(again.committed[pos])


def test_annealed_temperature_is_linear_from_start_to_end() -> None:
    cfg = SamplerConfig(steps=5, temperature=1.0, temperature_end=0.2)
    assert [round(step_temperature(cfg, k), 6) for k in range(1, 6)] == [1.0, 0.8, 0.6, 0.4, 0.2]
    assert step_temperature(SamplerConfig(steps=5, temperature=0.7), 3) == 0.7
    assert step_temperature(dataclasses.replace(cfg, steps=1), 1) == 1.0
    with pytest.raises(ValueError, match="temperature_end"):
        sample(FakeDenoiser(), make("uniform"), dataclasses.replace(cfg, temperature_end=-1.0), length=4)


def test_annealing_changes_the_late_steps_only_through_temperature(model) -> None:
    diffusion = make("uniform")
    plain = run(model, diffusion, SamplerConfig(steps=6, seed=3, temperature=0.5), length=L)
    annealed = run(model, diffusion, SamplerConfig(steps=6, seed=3, temperature=0.5, temperature_end=0.5), length=L)
    assert same_runs(plain, annealed), "an end equal to the start is a constant temperature"
    other = run(model, diffusion, SamplerConfig(steps=6, seed=3, temperature=0.5, temperature_end=0.05), length=L)
    assert same_runs(plain[:2], other[:2]), "step 1 uses the start temperature"
    assert not same_runs(plain, other)


def test_no_repeat_keeps_a_committed_word_away_from_the_same_final_word() -> None:
    from engine.tiny import build_tiny_tokenizer, corpus
    from engine.words import WordRule, build_lexicon

    tok = build_tiny_tokenizer()
    rule = WordRule(tok, build_lexicon(corpus()))
    the = tok.encode(" the")[0]
    V = tok.vocab_size

    the_too = [i for i in range(V) if i != the and int(rule.word_of[i]) == int(rule.word_of[the])]  # "the", " The"...

    class Repeater(torch.nn.Module):  # x̂0 prefers " the" (and its other spellings) everywhere
        def forward(self, x_t, t, clean):
            logits = torch.zeros(x_t.shape + (V,))
            logits[..., the] = 8.0
            logits[..., the_too] = 7.0
            return logits

    diffusion = make("uniform", vocab=V)
    cfg = SamplerConfig(steps=4, seed=0, commit=True, no_repeat=2, whole_words=False, greedy_last=True)
    with pytest.raises(ValueError, match="no_repeat"):
        sample(Repeater(), diffusion, cfg, length=12)
    last = run(Repeater(), diffusion, cfg, length=12, words=rule)[-1]
    ids = last.tokens.tolist()
    for p, tid in enumerate(ids):
        w = int(rule.word_of[tid])
        if w >= 0:
            near = [int(rule.word_of[i]) for i in ids[max(0, p - 2) : p] + ids[p + 1 : p + 3]]
            assert w not in near, f"{tok.decode([tid])!r} at {p} repeats within 2 positions: {tok.decode(ids)!r}"
    plain = run(Repeater(), diffusion, dataclasses.replace(cfg, no_repeat=0), length=12, words=rule)[-1]
    assert plain.tokens.tolist().count(the) > ids.count(the)


def test_frontier_order_grows_the_text_from_what_is_final(model) -> None:
    cfg = SamplerConfig(steps=10, seed=2, commit=True, commit_order="frontier")
    pins = {0: 3, 10: 5}
    steps = run(model, make("uniform"), cfg, length=L, pins=pins)
    first = steps[1].committed.nonzero().flatten().tolist()
    assert first == [1, 11], "the positions right after the two pins go first"
    for st in steps[1:]:
        final = st.committed | st.pinned
        # every committed position has a final left neighbour: the text grows rightwards
        assert all(bool(final[p - 1]) for p in st.committed.nonzero().flatten().tolist())
    with pytest.raises(ValueError, match="commit_order"):
        sample(model, make("uniform"), dataclasses.replace(cfg, commit_order="random"), length=4)
