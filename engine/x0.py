"""x̂0 at one reverse step: the weights the sampler draws from, after its cuts and temperature.

Glossary
  weights    x̂0 up to a positive factor per row, (n, V) for the n free positions: exp of the
             logits minus the row's largest, so the best id weighs 1
  cut        ids a step never draws at a position (set to weight 0): glued pieces right after a
             held clause end, a template's label ids; a row a cut would empty keeps its x̂0
  shaped     the weights the draw uses: x̂0^(1/T) (temperature), or top-p's nucleus

Every pass here runs over (n, V) floats (about 2 MB for a template) that do not stay in cache,
so each costs about as much as a layer of the model: the cuts change the few columns or rows
they concern in place, and tempering works from the log-weights (no power of the weights).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from engine.slot_end import EndCut, apply_cut
from engine.words import LabelRule, WordRule

TEMPER_FLOOR = -80.0  # `tempered`: exponents below it give weight 0, never a subnormal float


def shape_x0(probs: Tensor, temperature: float = 1.0, top_p: float = 1.0) -> Tensor:
    """(n, V) x̂0 (or weights proportional to it, each row with some mass) with temperature
    (p^(1/T), renormalised; T = 0 is argmax) and then top-p (keep the most probable ids until
    their mass reaches top_p, at least one, renormalised)."""
    if temperature == 0.0:
        return torch.nn.functional.one_hot(probs.argmax(-1), probs.shape[-1]).to(probs.dtype)
    if temperature != 1.0:  # the row's largest weight raised is 1: no row underflows to nothing
        out = (probs / probs.amax(-1, keepdim=True)).pow_(1.0 / temperature)
    else:
        out = probs.clone()
    out.div_(out.sum(-1, keepdim=True))
    if top_p < 1.0:
        sorted_p, order = out.sort(dim=-1, descending=True)  # (n, V)
        before = sorted_p.cumsum(-1) - sorted_p  # mass strictly before each id
        keep_sorted = before < top_p
        keep_sorted[..., 0] = True
        keep = torch.zeros_like(keep_sorted).scatter(-1, order, keep_sorted)
        out = torch.where(keep, out, torch.zeros_like(out))
        out = out / out.sum(-1, keepdim=True)
    return out


def tempered(log_w: Tensor, temperature: float) -> Tensor:
    """(n, V) weights proportional to x̂0^(1/T), not normalised: exp(log_w / T), for log-weights
    log_w whose largest in each row is 0 (so the row's best weighs 1).

    An exponent below TEMPER_FLOOR gives 0: such an id weighs under e^-80 of its row's best (at
    most V e^-80, about 1e-31, of the row's mass in all), and a weight that small would be a
    subnormal float, on which arithmetic runs 30-40x slower on x86
    (docs/notebook/2026-12-06-cheaper-steps.md). Otherwise the distribution of
    shape_x0(exp(log_w), temperature)."""
    return torch.nn.functional.threshold_(log_w * (1.0 / temperature), TEMPER_FLOOR, -math.inf).exp_()


def step_weights(logits: Tensor, temperature: float, top_p: float, greedy: bool, tokens: Tensor, held: Tensor,
                 free_idx: Tensor, words: WordRule | None, avoid: LabelRule,
                 ends: EndCut | None = None) -> tuple[Tensor, Tensor | None, Tensor, Tensor]:
    """From the head's logits (n, V) at the free positions free_idx (consumed): (weights, x̂0 up
    to a factor per row with the step's cuts; the draw's shaped weights or None; the weights'
    row totals; each row's best id before the cuts, (n,)). Cuts: with `words`, only spaced
    tokens right after a held clause end; none of the template's label ids in `avoid`; the
    end_of_slot rule's <eos> rows in `ends` (engine.slot_end); a row a cut would leave empty
    keeps its x̂0. Shaped: None where x̂0 itself is drawn (T = 1 without top-p, or a greedy
    step), else weights ∝ x̂0^(1/T) (`tempered`, with the same cuts) or shape_x0 (T = 0, top-p)."""
    top, top_id = logits.max(-1, keepdim=True)  # (n, 1), (n, 1)
    log_w = logits.sub_(top)  # (n, V) log x̂0 up to a constant per row: 0 at the best id
    weights = log_w.exp()  # (n, V)
    tempering = not greedy and temperature > 0.0 and temperature != 1.0 and top_p == 1.0
    shaped = tempered(log_w, temperature) if tempering else None
    if words is not None:
        words.space_after_held_clause(weights, tokens, held, free_idx, also=shaped)
    held_back = apply_cut(ends, weights, shaped, top_id[:, 0]) if ends is not None else None
    if avoid.ids.numel():
        saved = weights[:, avoid.ids]  # (n, m)
        weights.index_fill_(-1, avoid.ids, 0.0)
        total = weights.sum(-1)  # (n,)
        empty = (total <= 0).nonzero().flatten()  # rows the cut would leave with nothing: they keep x̂0
        saved_s = None if shaped is None else shaped[:, avoid.ids]  # (n, m)
        if shaped is not None:
            shaped.index_fill_(-1, avoid.ids, 0.0)
        if empty.numel():
            weights[empty[:, None], avoid.ids] = saved[empty]
            total[empty] = weights[empty].sum(-1)
            if saved_s is not None:
                shaped[empty[:, None], avoid.ids] = saved_s[empty]
    else:
        total = weights.sum(-1)  # (n,)
    if held_back is not None:  # eos mass a row may not draw yet still counts against its draw's confidence
        total.index_add_(0, held_back[0], held_back[1])
    if shaped is not None:  # a row whose best id was cut: its shaped weights from its best left
        rows = (weights.gather(-1, top_id)[:, 0] == 0).nonzero().flatten()  # (r,)
        if rows.numel():
            dead = weights[rows] == 0  # (r, V)
            lw = log_w[rows].masked_fill_(dead, -math.inf)
            shaped[rows] = tempered(lw - lw.amax(-1, keepdim=True), temperature)
    elif not greedy and not (temperature == 1.0 and top_p == 1.0):
        shaped = shape_x0(weights, temperature, top_p)
    return weights, shaped, total, top_id[:, 0]
