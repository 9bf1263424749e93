"""Shared layers of the denoisers: time embedding, adaptive LayerNorm and the channel MLP.

The SFDLM (engine.model) and the transformer baselines (engine.baseline) both use them; the
SFDLM's own sequence mixers are engine.ssm and engine.fourier_mlp.

Glossary
  B, L, D  batch size, sequence length, model width (channels)
  t        diffusion time in [0, 1] (B,)
  c        conditioning vector from the diffusion time (B, D)

Reference (ideas only, the code is ours): DiT (Peebles & Xie 2022) for adaptive LayerNorm with
zero-initialised gates and the sinusoidal time features.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def sinusoidal_features(t: Tensor, dim: int, max_period: float = 10_000.0) -> Tensor:
    """Sinusoidal features of diffusion time t in [0, 1] (scaled by 1000 as in DiT): (B, dim)."""
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, device=t.device,
                                                           dtype=torch.float32) / half)
    arg = 1000.0 * t.float()[:, None] * freqs[None]  # (B, half)
    feats = torch.cat([torch.cos(arg), torch.sin(arg)], dim=-1)  # (B, 2*half)
    if dim % 2:
        feats = F.pad(feats, (0, 1))
    return feats


def per_row(f: Callable[[Tensor], Tensor], x: Tensor) -> Tensor:
    """f(x) for a small (B, ...) input, row by row at inference when B > 1.

    A product with one row runs another kernel (a matrix-vector one) than the same product
    with several rows, so a row of a batch would differ in its last bits from the same row
    computed alone. Computing these small per-sequence products (time conditioning, adaLN
    modulation: (B, D) inputs) one row at a time makes the batched inference of several
    sequences give exactly what each gives alone (engine.batching); in training it is one
    product as before."""
    if x.shape[0] <= 1 or torch.is_grad_enabled():
        return f(x)
    return torch.cat([f(x[i:i + 1]) for i in range(x.shape[0])])


class RowMemo:
    """f(x) of a small per-sequence input x (B, ...) at inference, remembered row by row.

    The time conditioning and the adaLN modulation depend on the diffusion time only, and every
    draft of S steps visits the same S times: a sampler step would otherwise spend about 4 % of
    its time recomputing them (one (1, D) @ (D, 9D) product per block reads the whole weight).
    A row is looked up by its bytes and the versions of `params`, so an update of the weights
    misses; on a hit the remembered tensor itself is returned, which callers only read. Each row
    is computed alone (as per_row does), so a batch gives what its rows give alone. Training,
    or an input off the CPU, computes as per_row."""

    size = 64  # rows kept per module: a few runs' step times

    def __init__(self) -> None:
        self._rows: dict[tuple, Tensor] = {}

    def __call__(self, f: Callable[[Tensor], Tensor], x: Tensor, params: tuple[Tensor, ...]) -> Tensor:
        if torch.is_grad_enabled() or x.device.type != "cpu":
            return per_row(f, x)
        ver = tuple((p._version, p.data_ptr()) for p in params)
        out = []
        for i in range(x.shape[0]):
            row = x[i:i + 1]
            key = (row.detach().numpy().tobytes(), str(row.dtype), tuple(row.shape), ver)
            hit = self._rows.get(key)
            if hit is None:
                if len(self._rows) >= self.size:
                    self._rows.pop(next(iter(self._rows)))
                hit = self._rows[key] = f(row)
            out.append(hit)
        return out[0] if len(out) == 1 else torch.cat(out)


class TimeEmbedding(nn.Module):
    """t -> sinusoidal features -> MLP -> c (B, D)."""

    def __init__(self, time_dim: int, d_model: int) -> None:
        super().__init__()
        self.time_dim = time_dim
        self.mlp = nn.Sequential(nn.Linear(time_dim, d_model), nn.SiLU(),
                                 nn.Linear(d_model, d_model))
        self._memo = RowMemo()

    def _row(self, t: Tensor) -> Tensor:
        return self.mlp(sinusoidal_features(t, self.time_dim))

    def forward(self, t: Tensor) -> Tensor:
        return self._memo(self._row, t, tuple(self.mlp.parameters()))  # (B, D)


class AdaLN(nn.Module):
    """DiT-style adaptive LayerNorm for `n_sub` sublayers: (shift, scale, gate) per sublayer.

    The modulation linear is zero-initialised, so every gate starts at 0 and each block is the
    identity at initialisation ("adaLN-Zero").
    """

    def __init__(self, d_model: int, n_sub: int, with_gate: bool = True) -> None:
        super().__init__()
        self.n_sub, self.per = n_sub, (3 if with_gate else 2)
        self.d_model = d_model
        self.mod = nn.Linear(d_model, self.per * n_sub * d_model)
        nn.init.zeros_(self.mod.weight)
        nn.init.zeros_(self.mod.bias)
        self._memo = RowMemo()

    def _row(self, c: Tensor) -> Tensor:
        return self.mod(F.silu(c))

    def forward(self, c: Tensor) -> Tensor:
        """Modulation vectors (B, n_sub, per, 1, D): [shift, scale(, gate)] per sublayer (at
        inference possibly a remembered tensor: read it, never change it)."""
        m = self._memo(self._row, c, (self.mod.weight, self.mod.bias))  # (B, n_sub*per*D)
        return m.view(c.shape[0], self.n_sub, self.per, 1, self.d_model)


def modulated_norm(x: Tensor, shift: Tensor, scale: Tensor) -> Tensor:
    """LayerNorm without affine, then x * (1 + scale) + shift; shift, scale (B, 1, D).

    With one sequence (B = 1) the modulation is passed to layer_norm as its affine weight and
    bias: one pass over (L, D) instead of two.
    """
    if x.shape[0] == 1:
        return F.layer_norm(x, (x.shape[-1],), (1 + scale).reshape(-1), shift.reshape(-1))
    xn = F.layer_norm(x, (x.shape[-1],))  # (B, L, D)
    return torch.addcmul(shift, xn, 1 + scale)


class ChannelMLP(nn.Module):
    """Position-wise MLP D -> mult*D -> D with GELU (shared by the SFDLM and the baselines)."""

    def __init__(self, d_model: int, mult: int) -> None:
        super().__init__()
        self.up = nn.Linear(d_model, mult * d_model)
        self.down = nn.Linear(mult * d_model, d_model)

    chunk = 512  # rows per chunk at inference: the hidden (chunk, mult*D) stays in cache

    def forward(self, x: Tensor) -> Tensor:
        rows = x.numel() // x.shape[-1]
        if torch.is_grad_enabled():
            return self.down(F.gelu(self.up(x)))  # hidden (B, L, mult*D)
        if rows <= 2 * self.chunk:
            return self.down(torch.ops.aten.gelu_(self.up(x)))
        # inference: up -> gelu (in place) -> down chunk by chunk; same arithmetic per row,
        # faster at long L and no (L, mult*D) intermediate in memory
        x2 = x.reshape(rows, x.shape[-1])
        out = x2.new_empty(rows, self.down.out_features)  # (B*L, D)
        w_up, w_down = self.up.weight.T, self.down.weight.T
        for s in range(0, rows, self.chunk):
            h = torch.addmm(self.up.bias, x2[s:s + self.chunk], w_up)  # (chunk, mult*D)
            torch.ops.aten.gelu_(h)
            torch.addmm(self.down.bias, h, w_down, out=out[s:s + self.chunk])
        return out.view(*x.shape[:-1], -1)
