"""One categorical draw per row of (n, V) weights, from one uniform per row.

The reverse process draws a token at every free position at every step (engine.diffusion's
posterior draw, engine.sampler's commitment draw), so this runs twice a step over all free
positions; bench.draw_cost times it against torch.multinomial and a one-level inverse CDF.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

DRAW_BLOCK = 64  # ids per block of the two-level inverse CDF in `categorical`


def has_mass(weights: Tensor, rows: Tensor, hint: Tensor | None = None) -> Tensor:
    """(r,) bool: which rows `rows` (r,) of the non-negative weights (n, V) keep some mass.

    `hint` (n,) names one id per row that usually carries weight (the row's best id before any
    cut): a row whose hinted weight is positive has mass, and only the others are summed. The
    answer is the same as summing every row; the hint saves a copy and a pass over (r, V)."""
    if hint is None:
        return weights[rows].sum(-1) > 0
    out = weights[rows, hint[rows]] > 0  # (r,)
    doubt = (~out).nonzero().flatten()
    if doubt.numel():
        out[doubt] = weights[rows[doubt]].sum(-1) > 0
    return out


def categorical(probs: Tensor, generator: torch.Generator) -> Tensor:
    """(n,) one draw per row of (n, V) probabilities by inverse CDF: one uniform per row, instead
    of V random numbers per row. Rows need not be normalised. An id with probability 0 is never
    drawn (the search takes the first id whose cumulative mass is strictly above u * total).

    The CDF is two-level: the sums of blocks of DRAW_BLOCK ids and their cumulative sum pick the
    block, and only that block's ids are summed one by one. A cumulative sum runs one element
    after another, so over all V ids it cost more than the rest of a sampler step (measured in
    docs/notebook/2026-12-06-cheaper-steps.md); the block sums are vectorised."""
    n, V = probs.shape
    u = torch.rand(n, 1, generator=generator, device=generator.device, dtype=probs.dtype).to(probs.device)
    B = DRAW_BLOCK
    nb = -(-V // B)
    padded = probs if nb * B == V else F.pad(probs, (0, nb * B - V))
    blocks = padded.reshape(n, nb, B)  # (n, nb, B)
    bcdf = blocks.sum(-1).cumsum(-1)  # (n, nb)
    target = u * bcdf[:, -1:]  # (n, 1)
    bi = torch.searchsorted(bcdf, target, right=True)[:, 0]  # (n,) the block holding the draw
    over = bi >= nb  # u * total rounded up to the total: take the most probable id
    bi = bi.clamp(max=nb - 1)
    before = torch.where(bi > 0, bcdf.gather(-1, (bi - 1).clamp(min=0)[:, None])[:, 0], torch.zeros_like(target[:, 0]))
    inner = blocks.gather(1, bi[:, None, None].expand(n, 1, B))[:, 0]  # (n, B)
    icdf = inner.cumsum(-1) + before[:, None]  # (n, B)
    j = torch.searchsorted(icdf, target, right=True)[:, 0]  # (n,)
    spill = j >= B  # rounding between the block's sum and its cumulative sum: its largest id
    idx = bi * B + torch.where(spill, inner.argmax(-1), j)
    if bool(over.any()):
        idx = torch.where(over, probs.argmax(-1), idx)
    return idx
