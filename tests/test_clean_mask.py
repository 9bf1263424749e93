"""engine.clean_mask: the clean spans a training window gets (shapes, shares, determinism)."""

from __future__ import annotations

import torch

from engine.clean_mask import random_clean_mask


def test_random_clean_mask_kinds_and_determinism() -> None:
    B, L = 300, 40
    m = random_clean_mask(B, L, torch.Generator().manual_seed(0), p=0.7)
    assert m.shape == (B, L) and m.dtype == torch.bool
    assert torch.equal(m, random_clean_mask(B, L, torch.Generator().manual_seed(0), p=0.7))
    rows = m.any(1)
    assert 0.55 < float(rows.float().mean()) < 0.85
    assert not bool(m.all(1).any()), "at least one position stays free"
    prefixes = [bool(r[: int(r.sum())].all()) and bool(r[0]) for r in m[rows]]
    assert any(prefixes) and not all(prefixes), "both prefixes and other shapes occur"
    assert not random_clean_mask(10, L, torch.Generator().manual_seed(0), p=0.0).any()
    full = random_clean_mask(50, L, torch.Generator().manual_seed(0), p=1.0)
    assert bool(full.any(1).all())
    assert not random_clean_mask(4, 1, torch.Generator().manual_seed(0), p=1.0).any()
