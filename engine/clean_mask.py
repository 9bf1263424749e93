"""Random clean spans for training: which positions of a window the loss holds clean.

The sampler passes the denoiser pins, prompts and template headings as clean positions
(engine.diffusion, `clean`). Training shows it the same shapes: in a share of the windows some
positions are marked clean, never corrupted and left out of every loss term.

Glossary
  B, L   batch size, window length
  p      the share of sequences that get any clean positions
"""

from __future__ import annotations

import torch
from torch import Tensor


def random_clean_mask(B: int, L: int, generator: torch.Generator, p: float = 0.5) -> Tensor:
    """(B, L) bool on CPU: per sequence, with probability 1 - p nothing is clean; otherwise one of
    (chosen uniformly)
      prefix     positions 0..n-1, n uniform in 1..max(1, L // 2)  (a prompt)
      spans      1..4 spans of 1..max(1, L // 8) tokens at random places  (pinned terms)
      headings   a short span (1..5 tokens) at the start, then again after gaps of
                 4..max(4, L // 3) tokens  (template headings)
    At least one position is always left free."""
    if not 0.0 <= p <= 1.0:
        raise ValueError(f"p must be in [0, 1], got {p}")
    K = L + 16  # enough uniforms per sequence for any of the three shapes
    draws = torch.rand((B, K), generator=generator, device=generator.device, dtype=torch.float64).cpu().tolist()  # one transfer
    mask = torch.zeros(B, L, dtype=torch.bool)  # (B, L)
    for b in range(B):
        stream = iter(draws[b])

        def randint(lo: int, hi: int) -> int:  # uniform in lo..hi inclusive
            return lo + min(int(next(stream) * (hi - lo + 1)), hi - lo)

        if next(stream) >= p:
            continue
        kind = randint(0, 2)
        if kind == 0:
            mask[b, : randint(1, max(1, L // 2))] = True
        elif kind == 1:
            for _ in range(randint(1, 4)):
                start = randint(0, L - 1)
                mask[b, start : start + randint(1, max(1, L // 8))] = True
        else:
            pos = 0
            while pos < L:
                h = randint(1, 5)
                mask[b, pos : pos + h] = True
                pos += h + randint(4, max(4, L // 3))
        if mask[b].all():
            mask[b, -1] = False
    return mask
