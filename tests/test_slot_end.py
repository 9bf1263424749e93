"""engine.slot_end: with end_of_slot, <eos> ends a slot's fill and stays a suffix of its slot."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from torch import nn

from engine.config import SamplerConfig
from engine.slot_end import EndCut, apply_cut, end_at_stop, end_cut, same_step
from engine.tokenizer import EOS
from test_sampler import V, FakeDenoiser, make, run

L = 24
PINS = {0: 5, 1: 6, 9: 7, 16: 8, 17: 9}  # runs 2..8, 10..15, 18..23


class EosLeaning(nn.Module):
    """FakeDenoiser's logits with <eos> raised, so that drafts draw it often and everywhere."""

    def __init__(self, seed: int, lift: float = 4.0) -> None:
        super().__init__()
        self.inner, self.lift = FakeDenoiser(seed=seed), lift

    def forward(self, x_t: torch.Tensor, t: torch.Tensor, clean: torch.Tensor) -> torch.Tensor:
        out = self.inner(x_t, t, clean).clone()
        out[..., EOS] += self.lift
        return out


def runs_of(held: list[bool]) -> list[list[int]]:
    out: list[list[int]] = []
    for q, h in enumerate(held):
        if h:
            continue
        if q == 0 or held[q - 1]:
            out.append([])
        out[-1].append(q)
    return out


def reference_cut(tokens: list[int], held: list[bool], fixed: list[bool], free: list[int]) -> tuple[set[int], set[int]]:
    """The rule read off its definition, position by position."""
    no, only = set(), set()
    for run in runs_of(held):
        for q in run:
            if q not in free:
                continue
            r = free.index(q)
            eos_before = any(fixed[p] and tokens[p] == EOS for p in run if p < q)
            word_after = any(fixed[p] and tokens[p] != EOS for p in run if p > q)
            if eos_before and not word_after:
                only.add(r)
            elif q == run[0] or not fixed[q - 1] or word_after:
                no.add(r)
    return no, only


@pytest.mark.parametrize("seed", range(30))
def test_the_cut_rows_are_those_of_the_definition(seed: int) -> None:
    g = torch.Generator().manual_seed(seed)
    n = 40
    held = torch.rand(n, generator=g) < 0.2
    fixed = held | (torch.rand(n, generator=g) < 0.4)
    tokens = torch.randint(0, 6, (n,), generator=g)
    tokens[torch.rand(n, generator=g) < 0.3] = EOS
    free_idx = (~fixed).nonzero().flatten()
    cut = end_cut(tokens, held, fixed, free_idx, EOS)
    no, only = reference_cut(tokens.tolist(), held.tolist(), fixed.tolist(), free_idx.tolist())
    assert set(cut.no.tolist()) == no
    assert set(cut.only.tolist()) == only


def test_the_cut_takes_eos_from_some_rows_and_everything_else_from_others() -> None:
    w = torch.rand(3, V) + 0.1
    w[2] = 0.0
    w[2, EOS] = 1.0  # a row whose only mass is eos keeps it
    shaped = w.clone()
    apply_cut(EndCut(EOS, torch.tensor([0, 2]), torch.tensor([1])), w, shaped)
    assert float(w[0, EOS]) == 0.0 and float(shaped[0, EOS]) == 0.0
    assert float(w[2, EOS]) == 1.0
    assert torch.equal(w[1], torch.nn.functional.one_hot(torch.tensor(EOS), V).float())
    assert torch.equal(shaped[1], w[1])


def test_rows_committed_together_keep_eos_a_suffix() -> None:
    held = torch.tensor([True] + [False] * 6 + [True])
    tokens = torch.tensor([5, 1, 1, 1, 1, 1, 1, 6])
    fixed = held.clone()
    free_idx = torch.arange(1, 7)
    # the most confident row (position 5) writes a word; position 3 then draws eos, which that
    # word after it forbids, so it is drawn again; position 6 keeps its word
    draw = torch.tensor([2, 2, EOS, 2, 4, 4])
    dist = torch.ones(6, V)
    out = same_step(draw, dist, [4, 2, 5], tokens, held, fixed, free_idx, EOS, True, torch.Generator())
    assert int(out[4]) == 4 and int(out[2]) != EOS and int(out[5]) == 4
    # an eos right after written text turns the words accepted after it in its run into eos
    draw = torch.tensor([2, EOS, 2, 2, 4, 4])
    out = same_step(draw, dist, [0, 1, 5], tokens, held, fixed, free_idx, EOS, True, torch.Generator())
    assert int(out[0]) == 2 and int(out[1]) == EOS and int(out[5]) == EOS
    # an eos whose left neighbour is still to be written waits: drawn again without eos
    out = same_step(draw, dist, [1, 0, 5], tokens, held, fixed, free_idx, EOS, True, torch.Generator())
    assert int(out[1]) != EOS and int(out[5]) == 4
    draw = torch.tensor([EOS, 2, 2, 2, 4, 4])
    out = same_step(draw, dist, [0], tokens, held, fixed, free_idx, EOS, True, torch.Generator())
    assert int(out[0]) != EOS, "a run's first position keeps a token"


def _suffix_violations(tokens: list[int], held: list[bool]) -> int:
    bad = 0
    for run in runs_of(held):
        ids = [tokens[q] for q in run]
        if EOS in ids:
            first = ids.index(EOS)
            bad += first == 0 or any(t != EOS for t in ids[first:])
    return bad


@pytest.mark.parametrize("noise", ["uniform", "absorbing"])
def test_eos_is_a_suffix_of_every_slot_at_every_step(noise: str) -> None:
    cfg = SamplerConfig(steps=6, commit=True, commit_power=2.0, temperature=0.8, end_of_slot=True)
    ended = 0
    for seed in range(12):
        steps = run(EosLeaning(seed), make(noise), dataclasses.replace(cfg, seed=seed), length=L, pins=PINS)
        for st in steps[1:]:
            fixed = (st.committed | st.pinned).tolist()
            final = [t if f else -1 for t, f in zip(st.tokens.tolist(), fixed)]
            held = st.pinned.tolist()
            for run_ in runs_of(held):
                ids = [final[q] for q in run_]
                if EOS in ids:
                    e = ids.index(EOS)
                    assert e > 0 and all(t in (EOS, -1) for t in ids[e:]), (seed, st.index, ids)
        last = steps[-1]
        assert _suffix_violations(last.tokens.tolist(), last.pinned.tolist()) == 0
        ended += EOS in last.tokens.tolist()
    assert ended >= 6, "the model leans to eos: most drafts end a slot early"


def test_without_the_rule_the_same_drafts_put_eos_inside_slots() -> None:
    cfg = SamplerConfig(steps=6, commit=True, commit_power=2.0, temperature=0.8)
    bad = 0
    for seed in range(12):
        last = run(EosLeaning(seed), make("uniform"), dataclasses.replace(cfg, seed=seed), length=L, pins=PINS)[-1]
        bad += _suffix_violations(last.tokens.tolist(), last.pinned.tolist())
    assert bad > 0


def test_without_commit_the_rule_keeps_eos_out_of_slots() -> None:
    cfg = SamplerConfig(steps=4, temperature=0.8, end_of_slot=True)
    for seed in range(6):
        steps = run(EosLeaning(seed), make("uniform"), dataclasses.replace(cfg, seed=seed), length=L, pins=PINS)
        free = ~steps[-1].pinned
        assert not bool((steps[-1].tokens[free] == EOS).any())
        plain = run(EosLeaning(seed), make("uniform"), dataclasses.replace(cfg, seed=seed, end_of_slot=False), length=L, pins=PINS)
        assert bool((plain[-1].tokens[free] == EOS).any()), "the model leans to eos: without the rule it writes some"


def test_a_run_without_eos_is_unchanged_by_the_rule() -> None:
    """Where the model never leans to eos the rule only forbids it at a run's first position."""
    cfg = SamplerConfig(steps=6, commit=True, seed=3, temperature=0.0)
    lean = EosLeaning(3, lift=-50.0)
    a = run(lean, make("uniform"), cfg, length=L, pins=PINS)[-1]
    b = run(lean, make("uniform"), dataclasses.replace(cfg, end_of_slot=True), length=L, pins=PINS)[-1]
    assert torch.equal(a.tokens, b.tokens)


def test_eos_a_row_may_not_draw_still_counts_against_its_confidence() -> None:
    """The cut takes eos out of the draw, not out of the row's total: a position the model
    thinks has ended is not made confident by the cut (so it is committed late)."""
    from engine.words import LabelRule
    from engine.x0 import step_weights
    logits = torch.zeros(2, V)
    logits[:, EOS] = 3.0  # eos is the model's best guess at both rows
    tokens = torch.tensor([5, 1, 1, 6])
    held = torch.tensor([True, False, False, True])
    free_idx = torch.tensor([1, 2])
    cut = end_cut(tokens, held, held, free_idx, EOS)  # row 0 opens its run, row 1 has no final left neighbour
    assert set(cut.no.tolist()) == {0, 1}
    weights, shaped, total, _ = step_weights(logits.clone(), 0.5, 1.0, False, tokens, held, free_idx, None, LabelRule(), cut)
    assert float(weights[:, EOS].max()) == 0.0 and float(shaped[:, EOS].max()) == 0.0
    full = torch.exp(logits - 3.0).sum(-1)  # the rows' x̂0 totals before the cut
    assert torch.allclose(total, full)
    assert float((weights.max(-1).values / total).max()) < 0.1, "a word here is a low-confidence draw"


# ---------------------------------------------------------------- end_at_stop: the last step
# a toy vocabulary: 10 " word", 11 " stop." (ends a sentence), 12 "3." (ends with "." but glues on:
# a number), 13 "5" (no space), 14 "\n Next:" (a template's next line), 15 " pin"
STOPS = torch.zeros(16, dtype=torch.bool)
STOPS[[11, 12]] = True
SPACED = torch.zeros(16, dtype=torch.bool)
SPACED[[10, 11, 15, EOS]] = True
LINE = torch.zeros(16, dtype=torch.bool)
LINE[14] = True
W, S_, N3, N5, NL, PIN = 10, 11, 12, 13, 14, 15


def ended(ids: list[int], held: set[int], keep: float = 0.5) -> list[int]:
    hold = torch.tensor([q in held for q in range(len(ids))])
    return end_at_stop(torch.tensor(ids), hold, EOS, STOPS, SPACED, LINE, keep).tolist()


def test_a_fill_ends_at_its_last_sentence_end() -> None:
    ids = [PIN, W, W, S_, W, S_, W, W, NL]  # label, a fill of 7 tokens, the next line
    assert ended(ids, {0, 8}) == [PIN, W, W, S_, W, S_, EOS, EOS, NL]
    assert ended(ids[:-1], {0}) == [PIN, W, W, S_, W, S_, EOS, EOS]  # the draft's end closes a run too


def test_what_would_lose_more_than_the_kept_share_stays() -> None:
    ids = [PIN, W, S_, W, W, W, W, W, NL]  # the only stop leaves 2 of 7 tokens
    assert ended(ids, {0, 8}) == ids
    assert ended(ids, {0, 8}, keep=0.25) == [PIN, W, S_] + [EOS] * 5 + [NL]


def test_a_number_a_pin_inside_a_line_and_an_ended_fill_are_left_alone() -> None:
    assert ended([PIN, W, W, W, N3, N5, W, NL], {0, 7}) == [PIN, W, W, W, N3, N5, W, NL]  # "3.5" is no sentence end
    assert ended([PIN, W, W, S_, W, PIN, W], {0, 5, 6}) == [PIN, W, W, S_, W, PIN, W]  # text leads into the pin
    done = [PIN, W, W, S_, W, S_, EOS, EOS, NL]
    assert ended(done, {0, 8}) == done
    assert ended([PIN, W, S_, W, S_, W, EOS, EOS, NL], {0, 8}) == [PIN, W, S_, W, S_, EOS, EOS, EOS, NL]


def test_the_last_step_of_a_real_draft_ends_its_fills_and_nothing_else_changes() -> None:
    """The shipped model on a template: with end_at_stop every step but the last is the same
    draft, and the last differs only where a fill's tail after its last sentence end became <eos>."""
    from pathlib import Path

    from engine import checkpoint, template
    from engine.sampler import sample

    root = Path(__file__).resolve().parent.parent
    ck = checkpoint.load(root / "assets" / "model")
    layout = template.expand((root / "assets" / "templates" / "shift_handover.txt").read_text(), ck.tokenizer)
    trimmed = 0
    for seed in range(4):
        cfg = dataclasses.replace(ck.sampler_cfg, seed=seed, end_at_stop=False)
        kw = dict(length=layout.length, pins=dict(layout.pins), words=ck.words, labels=list(layout.pins.values()))
        plain = list(sample(ck.model, ck.diffusion(), cfg, **kw))
        cut = list(sample(ck.model, ck.diffusion(), dataclasses.replace(cfg, end_at_stop=True), **kw))
        assert all(torch.equal(a.tokens, b.tokens) for a, b in zip(plain[:-1], cut[:-1]))
        a, b = plain[-1].tokens.tolist(), cut[-1].tokens.tolist()
        for slot in layout.slots:
            span = range(slot.start, slot.start + slot.length)
            diff = [q for q in span if a[q] != b[q]]
            if diff:
                trimmed += 1
                assert all(b[q] == EOS for q in range(diff[0], span.stop)), "the tail is <eos> to the slot's end"
                assert ck.tokenizer.decode(b[slot.start : diff[0]]).rstrip()[-1] in ".!?"
            assert [q for q in span if b[q] == EOS] == list(range(span.stop - b[span.start : span.stop].count(EOS), span.stop))
    assert trimmed, "some fill ran on after a sentence end in these drafts"
