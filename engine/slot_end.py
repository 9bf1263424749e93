"""The end_of_slot rule: <eos> ends a slot's fill, and after it the slot holds only <eos>.

A model trained on template-shaped rows (engine.slot_data) writes a short fill and then <eos> up
to the slot's end, where one trained on running text runs on into the next label's line. The
rule keeps that shape whatever the draws: <eos> stays a suffix of its slot.

Glossary
  run     a maximal run of positions the caller does not hold (template text, pins, edits held
          as clean): a template's slot, or a free draft after its prefix
  final   a position whose token is fixed at this step: held, or committed earlier
  end     the first final <eos> of a run; the fill is the tokens before it

Per step (rows are the free positions, as in engine.x0):
  - a row with a final <eos> before it in its run may draw only <eos>;
  - a row with a final token other than <eos> after it in its run, or one whose left neighbour
    is not yet a final token of its run (the first position of a run included: a fill keeps at
    least one token), may not draw <eos>: a fill's end is placed right after written text and
    grows to the right, never back over positions still to be written;
  - rows committed together are checked in their commit order (`same_step`), each against
    those accepted before it, as engine.commit does for repeated words.
A row that the cut would leave with no mass keeps its x̂0, as the other cuts do. Without commit
nothing in a run is final before the last step, so no row may draw <eos>: the rule then only
keeps <eos> out of slots.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from engine.draws import categorical, has_mass


@dataclass(frozen=True)
class EndCut:
    """The rule's rows at one step, as indexes into free_idx: `no` may not draw eos, `only` may
    draw nothing else."""

    eos: int
    no: Tensor  # (a,)
    only: Tensor  # (b,)


def end_cut(tokens: Tensor, held: Tensor, fixed: Tensor, free_idx: Tensor, eos: int) -> EndCut:
    """The rule's rows for the free positions free_idx (n,); tokens, held (the caller's holds,
    which bound the runs) and fixed (held or committed) are (L,)."""
    L = tokens.shape[0]
    pos = torch.arange(L)
    run = torch.cumsum(held.long(), 0)  # (L,) positions of one run share it
    own = fixed & ~held  # (L,) final tokens written in the runs
    is_eos = tokens == eos
    last_eos = torch.where(own & is_eos, pos, torch.full_like(pos, -1)).cummax(0).values  # (L,) at or before q
    before = torch.cat([torch.full((1,), -1, dtype=torch.long), last_eos[:-1]])  # (L,) strictly before q
    eos_before = (before >= 0) & (run[before.clamp(min=0)] == run)
    words_at = torch.where(own & ~is_eos, pos, torch.full_like(pos, L))
    next_word = words_at.flip(0).cummin(0).values.flip(0)  # (L,) at or after q
    after = torch.cat([next_word[1:], torch.full((1,), L, dtype=torch.long)])  # (L,) strictly after q
    word_after = (after < L) & (run[after.clamp(max=L - 1)] == run)
    left_open = torch.cat([torch.ones(1, dtype=torch.bool), ~own[:-1]])  # (L,) left neighbour not written and final
    only = eos_before & ~word_after  # (L,)
    no = (left_open | word_after) & ~only  # (L,)
    only, no = only[free_idx], no[free_idx]  # (n,)
    return EndCut(eos, no.nonzero().flatten(), only.nonzero().flatten())


def apply_cut(cut: EndCut, weights: Tensor, shaped: Tensor | None, best: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """In place on weights (n, V) (and `shaped`, the draw's weights, when given); `best` (n,), the
    rows' best ids, only makes the check for emptied rows cheaper (`draws.has_mass`). Returns the
    rows that lost eos and the weight each lost: the caller counts it in the row's total, so a
    draw's confidence is still its share of x̂0 (a position the model thinks has ended is not
    made confident by the cut, and is committed late, once the text before it is written)."""
    rows, lost = cut.no, weights.new_zeros(0)
    if cut.no.numel():
        kept = weights[cut.no, cut.eos].clone()  # (a,)
        weights[cut.no, cut.eos] = 0.0
        empty = ~has_mass(weights, cut.no, best)  # rows whose only mass was eos keep it
        weights[cut.no[empty], cut.eos] = kept[empty]
        if shaped is not None:
            shaped[cut.no[~empty], cut.eos] = 0.0
        rows, lost = cut.no[~empty], kept[~empty]
    if cut.only.numel():
        for w in (weights, shaped):
            if w is not None:
                w[cut.only] = 0.0
                w[cut.only, cut.eos] = 1.0
    return rows, lost


def same_step(draw: Tensor, dist: Tensor, order: list[int], tokens: Tensor, held: Tensor, fixed: Tensor,
              free_idx: Tensor, eos: int, greedy: bool, gen: torch.Generator) -> Tensor:
    """Draws of the rows committed together in one step (`order`, most confident first), each
    checked against the final tokens of its run, those accepted before it in this step included:
    after an end, eos; an eos with a written token after it in the run, or whose left neighbour
    is not final (the run's first position included), drawn again without eos (kept where
    nothing else has mass)."""
    cur, final, hold = tokens.tolist(), fixed.tolist(), held.tolist()
    pos = free_idx.tolist()
    draw = draw.clone()
    L = len(cur)
    for r in order:
        p = pos[r]
        a = p
        while a > 0 and not hold[a - 1]:
            a -= 1
        b = p + 1
        while b < L and not hold[b]:
            b += 1
        t = int(draw[r])
        if any(final[q] and cur[q] == eos for q in range(a, p)):
            t = eos
        elif t == eos and (p == a or not final[p - 1] or any(final[q] and cur[q] != eos for q in range(p + 1, b))):
            d = dist[r].clone()
            d[eos] = 0.0
            if float(d.sum()) > 0:
                t = int(d.argmax()) if greedy else int(categorical(d[None], gen)[0])
        draw[r] = t
        cur[p], final[p] = t, True
    return draw


def end_at_stop(tokens: Tensor, held: Tensor, eos: int, stops: Tensor, spaced: Tensor, line_start: Tensor,
                keep: float = 0.5) -> Tensor:
    """The finished draft's fills ended at their last sentence end (`end_at_stop`): in each run
    that a line break or the draft's end closes (a template's slot, a free draft's text; not a run
    that a pin inside a line closes, whose text leads into the pin), a fill that runs on after a
    final ". ! ?" token followed by a space has its tail turned into <eos>, where that keeps at
    least `keep` of the fill's tokens. tokens, held (L,); stops, spaced, line_start (V,) mark the
    ids that end a sentence, open with a space, open with a line break. Returns new tokens."""
    out = tokens.clone()
    ids, hold = tokens.tolist(), held.tolist()
    L, a = len(ids), 0
    while a < L:
        if hold[a]:
            a += 1
            continue
        b = a
        while b < L and not hold[b]:
            b += 1
        if b == L or bool(line_start[ids[b]]):
            fill = a
            while fill < b and ids[fill] != eos:
                fill += 1
            if fill > a and not bool(stops[ids[fill - 1]]):  # a fill that already ends a sentence stays
                for p in range(fill - 2, a - 1, -1):
                    if p + 1 - a < keep * (fill - a):
                        break
                    if bool(stops[ids[p]]) and bool(spaced[ids[p + 1]]):
                        out[p + 1 : b] = eos
                        break
        a = b
    return out
