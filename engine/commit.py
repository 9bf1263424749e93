"""Commitment: which free tokens of a reverse step become final, and in what order.

Glossary
  writable   positions not held by a pin (or clean_extra): the ones the sampler writes
  committed  writable positions whose token is final; held and passed as clean from then on
  target     commit_target(F, k, S, p) = ceil(F (k / S)^p) committed after step k, all of them at
             k = S; p = 1 (the default) is a constant number a step, p > 1 commits few tokens
             while the draft is mostly noise and more once it has context (cfg.commit_power)
  near       within `window` positions of a row's position, on either side

`engine.sampler` draws a candidate from x̂0 at every free position, ranks the candidates by the
model's own probability, and commits the best until the target is reached. With no_repeat, a
candidate that spells the same word as a final token nearby is drawn again without it
(`ban_nearby_words` for tokens final before the step, `spread_same_step` for those committed
earlier in the same step).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from engine.draws import categorical, has_mass
from engine.words import PHRASE_TRIES, WordRule


def commit_target(writable: int, k: int, steps: int, power: float = 1.0) -> int:
    """How many of the `writable` (not held) positions are committed once step k is done:
    ceil(writable * (k / steps) ** power), so that every one is final after the last step (and
    none before the first). power = 1 is exact integer arithmetic."""
    if power == 1.0:
        return -(-writable * k // steps)
    if k >= steps:
        return writable
    return min(writable, max(0, math.ceil(writable * (k / steps) ** power - 1e-9)))


def derive_committed(confidence: Tensor, held: Tensor, index: int, total_steps: int, power: float = 1.0) -> Tensor:
    """Committed positions of a step that does not record them (step `index` of `total_steps`,
    its confidence (L,) and held (L,) positions): the commit_target free positions of highest
    confidence (ties: the earlier position), under the schedule's `power`."""
    free = (~held).nonzero().flatten()  # (n,)
    m = commit_target(int(free.numel()), index, total_steps, power)
    out = torch.zeros(held.shape[0], dtype=torch.bool)  # (L,)
    if m:
        order = sorted(free.tolist(), key=lambda p: (-float(confidence[p]), p))
        out[torch.tensor(order[:m])] = True
    return out


def ban_nearby_words(dist: Tensor, tokens: Tensor, fixed: Tensor, free_idx: Tensor, window: int, rule: WordRule,
                     inplace: bool = False, best: Tensor | None = None) -> Tensor:
    """dist (n, V) with zero mass on every token that spells the same word as a token that is
    final (fixed) within `window` positions of the row's position (" slide", "slide", " Slide"
    alike); a row left with no mass keeps its original distribution. With `inplace`, dist itself
    is changed and returned; otherwise a copy, where a row changes. `best` (n,), the rows' best
    ids, only makes the check for emptied rows cheaper (`draws.has_mass`)."""
    word_of = rule.word_of
    L = tokens.shape[0]
    offsets = torch.cat([torch.arange(-window, 0), torch.arange(1, window + 1)])  # (2w,)
    near = free_idx[:, None] + offsets[None]  # (n, 2w)
    inside = (near >= 0) & (near < L)
    near = near.clamp(0, L - 1)
    near_word = word_of[tokens[near]]  # (n, 2w)
    ban = inside & fixed[near] & (near_word >= 0)  # (n, 2w)
    rows, cols = ban.nonzero(as_tuple=True)  # one (row, near word) pair each
    if not rows.numel():
        return dist
    w = near_word[rows, cols]  # (p,)
    start, count = rule.word_start[w], rule.word_start[w + 1] - rule.word_start[w]  # (p,), (p,)
    pair = torch.repeat_interleave(torch.arange(w.numel()), count)  # (q,) the pair of each banned id
    ids = rule.ids_by_word[start[pair] + torch.arange(pair.numel()) - (count.cumsum(0) - count)[pair]]  # (q,)
    at = rows[pair]  # (q,) its row
    hit_rows = torch.unique(rows)  # (m,)
    out = dist if inplace else dist.clone()
    kept = out[at, ids]  # (q,) what the ban takes away
    out[at, ids] = 0.0
    empty = ~has_mass(out, hit_rows, best)  # (m,) a row left with no mass keeps its distribution
    if bool(empty.any()):
        back = torch.isin(at, hit_rows[empty])  # (q,)
        out[at[back], ids[back]] = kept[back]
    return out


def _redraw(d: Tensor, greedy: bool, gen: torch.Generator) -> Tensor:
    """One row's draw again from d (V,), the way the step draws: argmax at a greedy step."""
    return d.argmax() if greedy else categorical(d[None], gen)[0]


def spread_same_step(draw: Tensor, dist: Tensor, order: list[int], tokens: Tensor, fixed: Tensor, free_idx: Tensor,
                      window: int, word_of: Tensor, greedy: bool, gen: torch.Generator) -> Tensor:
    """Draws of the rows committed together in one step (`order`, most confident first), each
    drawn again without the words that are final within `window` positions of it, counting
    those committed before it in this step; a row left with no mass keeps its draw."""
    cur, final = tokens.tolist(), fixed.tolist()  # (L,) with this step's accepted draws written in
    pos, drawn = free_idx.tolist(), draw.tolist()
    word = word_of.tolist()  # (V,) read once per step: the loop looks words up many times
    draw = draw.clone()
    L = len(cur)
    for r in order:
        p = pos[r]
        lo, hi = max(0, p - window), min(L, p + window + 1)
        near = {word[cur[q]] for q in range(lo, hi) if q != p and final[q]} - {-1}
        if word[drawn[r]] in near:
            d = dist[r].masked_fill(torch.isin(word_of, torch.tensor(sorted(near))), 0.0)  # (V,)
            if float(d.sum()) > 0:
                draw[r] = _redraw(d, greedy, gen)
                drawn[r] = int(draw[r])
        cur[p] = drawn[r]
        final[p] = True
    return draw


def avoid_phrases(draw: Tensor, dist: Tensor, order: list[int], tokens: Tensor, fixed: Tensor, free_idx: Tensor,
                  phrases: list[tuple[str, ...]], rule: WordRule, greedy: bool, gen: torch.Generator) -> Tensor:
    """Draws of the rows committed together in one step (`order`), each drawn again, up to
    PHRASE_TRIES times, while it would write out one of `phrases` (a template's labels) with the
    final tokens around its position, counting those committed before it in this step. A row
    left with no mass keeps its last draw."""
    cur, final, draw = tokens.tolist(), fixed.tolist(), draw.clone()  # (L,), (L,), (n,)
    pos = free_idx.tolist()
    for r in order:
        p = pos[r]
        left, right = rule.neighbours(cur, final, p)
        d = dist[r]  # (V,)
        t = int(draw[r])
        for _ in range(PHRASE_TRIES):
            if not rule.completes_phrase(left, t, right, phrases):
                break
            d = d.clone()
            d[t] = 0.0
            if float(d.sum()) <= 0:
                break
            draw[r] = _redraw(d, greedy, gen)
            t = int(draw[r])
        cur[p] = t
        final[p] = True
    return draw
