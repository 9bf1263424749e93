"""The SFDLM's Complex Fourier MLP: a block-diagonal complex MLP per rfft bin, plus a smooth filter.

Glossary
  B, L, D  batch size, sequence length (any; no maximum), model width (channels)
  Fq       number of rfft bins, L // 2 + 1
  nb, bs   number of diagonal blocks of the complex MLP (cfg.fourier_blocks) and their width D / nb
  h        hidden width of a block, bs * cfg.fourier_mult
  G        complex gain per channel and bin, a cosine series in the normalised frequency (K terms)

How (measurements: docs/notebook/2026-12-05-layers-performance.md): the input is transposed
once to channel-major rows (engine.fft.channels_first) and transformed along them, so the
spectrum is (B, D, Fq) and each block is one complex GEMM without transposes; at inference GELU
and the filter are applied in place and long inputs run a few blocks at a time (`chunk_elems`);
in training the mix is one autograd Function (_FourierMix) whose backward conjugates only small
operands, and the rfft has a c2r backward (engine.fft.rfft_last).

Reference (ideas only, the code is ours): FNO / AFNO (Li et al. 2020; Guibas et al. 2021) for
the block-diagonal complex MLP per Fourier mode.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from engine.fft import Path, channels_first, real_dft_matrices, rfft_last


class _FourierMix(torch.autograd.Function):
    """The Fourier MLP's training mix on a channel-major spectrum, as one autograd Function:
    X (B, D, Fq) complex, w1 (nb, h, bs), b1 (nb, h, 1), w2 (nb, bs, h), G (D, Fq) ->
      Y = w2 @ gelu_split(w1 @ X + b1) + G * X   (per block of bs channels, per bin).

    Its backward writes every product so that only small operands are conjugated: torch's own
    backward of matmul(w2, A) materialises conj(A) transposed, a strided copy of the whole
    hidden spectrum (B, nb, h, Fq), the largest tensor of the layer. Here
      grad A  = w2^H @ gY,                 grad H = gelu_split'(H) * grad A,
      grad w2 = sum_b gY A^H = (sum_b A conj(gY)^T)^H    (conj of gY, bs/h of A's size),
      grad w1 = sum_b grad H conj(X)^T,    grad b1 = sum over batch and bins of grad H,
      grad X  = w1^H @ grad H + conj(G) * gY,  grad G = sum_b gY * conj(X),
    in torch's convention for complex gradients (dL/dRe + i dL/dIm of a real loss)."""

    @staticmethod
    def forward(ctx, X: Tensor, w1: Tensor, b1: Tensor, w2: Tensor, G: Tensor) -> Tensor:
        b, d, fq = X.shape
        nb, h, bs = w1.shape
        Xb = X.view(b, nb, bs, fq)
        H = torch.matmul(w1, Xb).add_(b1)  # (B, nb, h, Fq)
        A = torch.view_as_complex(F.gelu(torch.view_as_real(H)))  # split GELU
        Y = torch.matmul(w2, A).view(b, d, fq).addcmul_(G, X)  # (B, D, Fq)
        ctx.save_for_backward(X, w1, w2, G, H, A)
        return Y

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, gY: Tensor) -> tuple[Tensor | None, ...]:
        X, w1, w2, G, H, A = ctx.saved_tensors
        b, d, fq = X.shape
        nb, h, bs = w1.shape
        need = ctx.needs_input_grad
        gY = gY.contiguous()
        gYb = gY.view(b, nb, bs, fq)
        gX = gw1 = gb1 = gw2 = gG = None
        if need[3]:  # (sum_b A conj(gY)^T)^H: only gY (not A) is conjugated
            gw2 = torch.matmul(A, gYb.conj_physical().transpose(-1, -2)).sum(0).mH  # (nb, bs, h)
        gH = torch.matmul(w2.transpose(-1, -2).conj_physical(), gYb)  # (B, nb, h, Fq)
        torch.ops.aten.gelu_backward(torch.view_as_real(gH), torch.view_as_real(H),
                                     grad_input=torch.view_as_real(gH))
        del A
        if need[2]:
            gb1 = gH.sum((0, 3))[..., None]  # (nb, h, 1)
        if need[1]:
            gw1 = torch.matmul(gH, X.conj_physical().view(b, nb, bs, fq).transpose(-1, -2)).sum(0)
        if need[0]:
            gX = torch.matmul(w1.transpose(-1, -2).conj_physical(), gH).view(b, d, fq).addcmul_(G.conj_physical(), gY)
        if need[4]:
            gG = (gY * X.conj()).sum(0)  # (D, Fq)
        return gX, gw1, gb1, gw2, gG


class ComplexFourierMLP(nn.Module):
    """rfft over the sequence -> per-bin block-diagonal complex MLP + smooth complex filter ->
    irfft.  Y_f = W2 gelu_split(W1 X_f + b1) + G(f / f_max) * X_f, with G a complex gain per
    channel written as a cosine series in the normalised frequency f in [0, 1], so any L works.
    Transforms use norm="ortho" so white-noise-like inputs give O(1) bins at every length.

    The spectrum is kept channel-major, (B, D, Fq) (the input is transposed to channel-major
    rows before the transform), so each block is one complex GEMM W (h, bs) @ X (bs, Fq) with no
    transposes; at inference GELU and the filter are applied in place and long inputs are
    processed a few blocks at a time.
    """

    def __init__(self, d_model: int, n_blocks: int, mult: int, n_filter: int = 8,
                 direct_max_len: int = 64) -> None:
        super().__init__()
        assert d_model % n_blocks == 0, "d_model must be divisible by fourier_blocks"
        bs = d_model // n_blocks
        self.d_model, self.n_blocks, self.bs, self.hidden = d_model, n_blocks, bs, bs * mult
        self.direct_max_len = direct_max_len
        h = self.hidden
        self.w1 = nn.Parameter(torch.randn(n_blocks, h, bs, 2) / math.sqrt(2 * bs))  # (nb,h,bs,2)
        self.b1 = nn.Parameter(torch.zeros(n_blocks, h, 2))  # (nb, h, re/im)
        self.w2 = nn.Parameter(torch.randn(n_blocks, bs, h, 2) / math.sqrt(2 * h))  # (nb,bs,h,2)
        self.filt = nn.Parameter(torch.randn(n_filter, d_model, 2) * 0.02)  # (K, D, re/im)
        self._filter_cache: dict[tuple, Tensor] = {}

    def filter(self, n_bins: int, device: torch.device, dtype: torch.dtype,
               ch: slice = slice(None)) -> Tensor:
        """Complex gain per channel and bin, complex (Dc, Fq); f normalised to [0, 1].
        Computed per call: one (2Dc, K) @ (K, Fq) product, cheap even at long L."""
        f = torch.linspace(0.0, 1.0, n_bins, device=device, dtype=dtype) if n_bins > 1 \
            else torch.zeros(1, device=device, dtype=dtype)
        k = torch.arange(self.filt.shape[0], device=device, dtype=dtype)
        phi = torch.cos(math.pi * k[:, None] * f[None])  # (K, Fq)
        filt = self.filt[:, ch]  # (K, Dc, 2)
        G = filt.permute(1, 2, 0).reshape(-1, filt.shape[0]) @ phi  # (Dc*2, Fq)
        G = G.view(-1, 2, n_bins).transpose(1, 2).contiguous()  # (Dc, Fq, 2)
        return torch.view_as_complex(G)

    def cached_filter(self, n_bins: int, device: torch.device, dtype: torch.dtype) -> Tensor:
        """filter() for all channels, cached at inference per Fq (small, short-L use only)."""
        key = (n_bins, str(device), dtype, self.filt._version, self.filt.data_ptr())
        if n_bins > 1025:
            return self.filter(n_bins, device, dtype)
        hit = self._filter_cache.get(key)
        if hit is None:
            if len(self._filter_cache) >= 2:
                self._filter_cache.pop(next(iter(self._filter_cache)))
            hit = self._filter_cache[key] = self.filter(n_bins, device, dtype)
        return hit

    def mix(self, X: Tensor) -> Tensor:
        """Per-bin complex MLP + filter on a channel-major spectrum X (B, D, Fq) complex."""
        b, d, fq = X.shape
        nb, bs = self.n_blocks, self.bs
        w1, w2 = torch.view_as_complex(self.w1), torch.view_as_complex(self.w2)
        b1 = torch.view_as_complex(self.b1)[..., None]  # (nb, h, 1)
        Xb = X.view(b, nb, bs, fq)
        if torch.is_grad_enabled():  # one Function, its backward written out (_FourierMix)
            return _FourierMix.apply(X, w1, b1, w2, self.filter(fq, X.device, X.real.dtype))
        # inference: a few blocks at a time (bounded working set), in place
        group = max(1, min(nb, self.chunk_elems // max(1, b * fq * 2 * self.hidden)))
        if group >= nb:  # short inputs: one pass, filter cached per Fq
            H = torch.matmul(w1, Xb).add_(b1)  # (B, nb, h, Fq)
            torch.ops.aten.gelu_(torch.view_as_real(H))
            Y = torch.matmul(w2, H).view(b, d, fq)  # (B, D, Fq)
            return Y.addcmul_(self.cached_filter(fq, X.device, X.real.dtype), X)
        Y = torch.empty_like(X)  # (B, D, Fq)
        Yb = Y.view(b, nb, bs, fq)
        # where one sequence alone takes the one-pass path, a batch of them takes the filter from
        # the same product for all channels, so each row is exactly what it is alone
        whole = self.cached_filter(fq, X.device, X.real.dtype) \
            if self.chunk_elems // max(1, fq * 2 * self.hidden) >= nb else None  # (D, Fq) or None
        for k0 in range(0, nb, group):
            k = slice(k0, min(nb, k0 + group))
            H = torch.matmul(w1[k], Xb[:, k]).add_(b1[k])  # (B, g, h, Fq)
            torch.ops.aten.gelu_(torch.view_as_real(H))
            ch = slice(k.start * bs, k.stop * bs)
            G = (whole[ch] if whole is not None else self.filter(fq, X.device, X.real.dtype, ch)).view(-1, bs, fq)  # (g, bs, Fq)
            if b == 1:  # Yb[:, k] is contiguous: the product lands in place, no copy
                Yk = torch.matmul(w2[k], H, out=Yb[:, k])  # (1, g, bs, Fq)
                Yk.addcmul_(G, Xb[:, k])
            else:
                Yb[:, k] = torch.matmul(w2[k], H).addcmul_(G, Xb[:, k])  # (B, g, bs, Fq)
        return Y

    chunk_elems = 1 << 21  # hidden real values per group of blocks at inference

    def forward(self, x: Tensor, path: Path = "auto") -> Tensor:
        b, length, d = x.shape
        if path == "auto":
            path = "dft" if length <= self.direct_max_len else "fft"
        if path == "dft":
            fwd, inv = real_dft_matrices(length, length, x.device, x.dtype,
                                         1.0 / math.sqrt(length))
            X = torch.matmul(fwd, x).unflatten(1, (-1, 2))  # (B, Fq, 2, D)
            X = torch.view_as_complex(X.permute(0, 3, 1, 2).contiguous())  # (B, D, Fq)
            Y = torch.view_as_real(self.mix(X))  # (B, D, Fq, 2)
            Y = Y.permute(0, 2, 3, 1).reshape(b, -1, d)  # (B, 2Fq, D)
            return torch.matmul(inv, Y)  # (B, L, D)
        # a transform along contiguous rows is several times cheaper than along dim 1; in
        # training rfft_last's backward is one c2r transform (torch's own is c2c)
        X = rfft_last(channels_first(x), norm="ortho")  # (B, D, Fq)
        y = torch.fft.irfft(self.mix(X), n=length, dim=-1, norm="ortho")  # (B, D, L)
        return y.transpose(1, 2)  # (B, L, D) view
