"""The sampler step's arithmetic over (n, V) weights: the two-level categorical draw, tempered
weights, the cuts of a step (`step_weights`) and ban_nearby_words. Each is checked against the
plain definition it replaces (one cumulative sum, a power of the weights, a (rows, V) mask)."""

from __future__ import annotations

import pytest
import torch

from bench.draw_cost import flat_cdf
from engine.commit import ban_nearby_words
from engine.draws import DRAW_BLOCK, categorical, has_mass
from engine.x0 import shape_x0, step_weights, tempered
from engine.words import LabelRule


@pytest.mark.parametrize("V", [DRAW_BLOCK * 3, 200, 5])
def test_a_draw_never_takes_an_id_without_mass(V: int) -> None:
    gen = torch.Generator().manual_seed(0)
    probs = torch.rand(4000, V, generator=gen)
    probs[torch.rand(4000, V, generator=gen) < 0.9] = 0.0  # sparse rows, zeros across block edges
    probs[:, 0] += (probs.sum(-1) == 0).float()  # every row keeps some mass
    probs[1, :] = 0.0
    probs[1, V - 1] = 1.0  # the only id with mass is the last one (a partial block at V = 200)
    probs[2, :] = 0.0
    probs[2, V // 2] = 1e-30  # a tiny mass is still mass
    draws = categorical(probs, torch.Generator().manual_seed(1))
    assert bool((probs.gather(-1, draws[:, None])[:, 0] > 0).all())
    assert int(draws[1]) == V - 1 and int(draws[2]) == V // 2


def test_draws_follow_the_row_weights_and_need_not_be_normalised() -> None:
    V, n = 300, 60000
    p = torch.rand(V, generator=torch.Generator().manual_seed(2)) ** 4
    p[::7] = 0.0
    draws = categorical((p * 3.5).expand(n, V).contiguous(), torch.Generator().manual_seed(3))
    freq = torch.bincount(draws, minlength=V).double() / n
    tv = 0.5 * float((freq - p.double() / p.sum()).abs().sum())
    assert tv < 0.03, f"total variation {tv:.3f} between draws and weights"


def test_a_draw_uses_one_uniform_per_row_and_matches_the_flat_search() -> None:
    gen_a, gen_b = torch.Generator().manual_seed(5), torch.Generator().manual_seed(5)
    probs = torch.rand(500, 1000, generator=torch.Generator().manual_seed(6)) ** 6
    ours, flat = categorical(probs, gen_a), flat_cdf(probs, gen_b)  # the plain one-level search
    assert torch.equal(torch.rand(3, generator=gen_a), torch.rand(3, generator=gen_b)), "the same random numbers used"
    assert float((ours == flat).double().mean()) > 0.99, "the same u lands on the same id but for rounding"


def test_tempered_weights_are_shape_x0_up_to_a_factor() -> None:
    logits = torch.randn(30, 500, generator=torch.Generator().manual_seed(7)) * 6
    logits[:, :5] = -1e9  # forbidden ids
    log_w = logits - logits.amax(-1, keepdim=True)
    for T in (0.2, 0.5, 2.0):
        ours = tempered(log_w, T)
        assert bool((ours[:, :5] == 0).all()), "no mass where x̂0 has none"
        assert bool((ours.amax(-1) == 1.0).all()), "the row's best weighs 1"
        torch.testing.assert_close(ours / ours.sum(-1, keepdim=True), shape_x0(log_w.exp(), T), atol=1e-6, rtol=1e-4)
    tiny = tempered(torch.tensor([[0.0, -10.0, -30.0]]), 0.2)  # e^-150: below the floor, so none
    assert float(tiny[0, 1]) > 0 and float(tiny[0, 2]) == 0.0


def test_a_step_cut_of_a_rows_best_id_tempers_from_the_best_left() -> None:
    V = 12
    logits = torch.zeros(3, V)
    logits[:, 4] = 9.0  # every row's best is id 4
    logits[:, 7] = 3.0
    labels = LabelRule(ids=torch.tensor([4]))
    weights, shaped, total, _ = step_weights(logits.clone(), 0.5, 1.0, False, torch.zeros(5, dtype=torch.long),
                                          torch.zeros(5, dtype=torch.bool), torch.tensor([0, 1, 2]), None, labels)
    assert bool((weights[:, 4] == 0).all()) and bool((shaped[:, 4] == 0).all()), "the label id is cut from both"
    assert bool((shaped[:, 7] == 1.0).all()), "the best id left weighs 1, not e^-12"
    torch.testing.assert_close(shaped / shaped.sum(-1, keepdim=True), shape_x0(weights, 0.5))
    torch.testing.assert_close(total, weights.sum(-1))
    only = torch.full((1, V), -1e9)
    only[0, 4] = 0.0  # a row whose only id is a label id keeps it
    w1, s1, t1, _ = step_weights(only, 0.5, 1.0, False, torch.zeros(2, dtype=torch.long), torch.zeros(2, dtype=torch.bool),
                              torch.tensor([0]), None, labels)
    assert float(w1[0, 4]) == 1.0 and float(s1[0, 4]) == 1.0 and float(t1[0]) == 1.0


def _ban_reference(dist, tokens, fixed, free_idx, window, word_of):
    """ban_nearby_words by its definition: a (rows, V) mask of the words final nearby."""
    out = dist.clone()
    L = tokens.shape[0]
    for r, p in enumerate(free_idx.tolist()):
        near = {int(word_of[tokens[q]]) for q in range(max(0, p - window), min(L, p + window + 1))
                if q != p and bool(fixed[q])} - {-1}
        if near:
            cut = dist[r].masked_fill(torch.isin(word_of, torch.tensor(sorted(near))), 0.0)
            out[r] = cut if float(cut.sum()) > 0 else dist[r]
    return out


def test_ban_nearby_words_matches_its_definition() -> None:
    from engine.tiny import build_tiny_tokenizer, corpus
    from engine.words import WordRule, build_lexicon

    tok = build_tiny_tokenizer()
    rule = WordRule(tok, build_lexicon(corpus()))
    V, L = tok.vocab_size, 40
    gen = torch.Generator().manual_seed(8)
    for trial in range(20):
        tokens = torch.randint(V, (L,), generator=gen)
        fixed = torch.rand(L, generator=gen) < 0.5
        free_idx = (~fixed).nonzero().flatten()
        dist = torch.rand(free_idx.numel(), V, generator=gen)
        if trial == 0:  # a row whose only mass is on a word final nearby keeps its distribution
            p = int(free_idx[1])
            q = p - 1 if p > 0 else p + 1
            fixed[q] = True
            tokens[q] = tok.encode(" the")[0]
            assert int(rule.word_of[tokens[q]]) >= 0
            free_idx = (~fixed).nonzero().flatten()
            dist = torch.rand(free_idx.numel(), V, generator=gen)
            row = int((free_idx == p).nonzero())
            dist[row] = 0.0
            dist[row, tokens[q]] = 1.0
        want = _ban_reference(dist, tokens, fixed, free_idx, 3, rule.word_of)
        assert torch.equal(ban_nearby_words(dist, tokens, fixed, free_idx, 3, rule), want)
        mine = dist.clone()
        assert ban_nearby_words(mine, tokens, fixed, free_idx, 3, rule, inplace=True) is mine
        assert torch.equal(mine, want)
        best = dist.argmax(-1) if trial % 2 else torch.randint(V, (free_idx.numel(),), generator=gen)  # a hint, good or not
        hinted = dist.clone()
        assert torch.equal(ban_nearby_words(hinted, tokens, fixed, free_idx, 3, rule, inplace=True, best=best), want)


def test_has_mass_with_a_hint_agrees_with_summing_every_row() -> None:
    gen = torch.Generator().manual_seed(4)
    w = torch.rand(60, 50, generator=gen)
    w[torch.rand(60, 50, generator=gen) < 0.8] = 0.0
    w[::7] = 0.0  # rows with nothing left
    w[3] = 0.0
    w[3, 49] = 1e-40  # a subnormal weight is still mass
    rows = torch.tensor([0, 3, 7, 8, 14, 21, 30, 59, 5])
    want = w[rows].sum(-1) > 0
    for hint in (w.argmax(-1), torch.zeros(60, dtype=torch.long), torch.randint(50, (60,), generator=gen)):
        assert torch.equal(has_mass(w, rows, hint), want)
    assert torch.equal(has_mass(w, rows), want)
    assert bool(want[1]) and not bool(want[2])
