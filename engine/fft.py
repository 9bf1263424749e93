"""FFT machinery of the SFDLM's sequence mixers (engine.ssm, engine.fourier_mlp).

Fast transform lengths, the grid on which the SSM kernel is sampled, real DFT matrices for short
sequences, channel-major copies, power tables without subnormals, and autograd Functions whose
backward passes use real transforms only. Measurements behind these choices:
docs/notebook/2026-12-05-layers-performance.md.

Glossary
  B, L, D  batch size, sequence length, channels
  Nfft     FFT length of the SSM's two-sided convolution, 2M with M >= L 5-smooth (so >= 2L - 1)
  Q, C     the kernel grid: sample l = qC + r of a kernel half of M = Q * C samples
  Fq       number of rfft bins, n // 2 + 1 for a transform of length n
  Path     how a layer transforms: "fft", "dft" (real DFT matrices as one GEMM over all B * D
           columns, which ties or beats the FFT only on short sequences) or "auto" (the DFT up
           to the layer's direct_max_len, the FFT beyond)
"""

from __future__ import annotations

import functools
import math
from typing import Literal

import torch
from torch import Tensor

Path = Literal["auto", "fft", "dft"]


def next_fast_len(n: int) -> int:
    """Smallest 5-smooth integer >= n (FFT-friendly length)."""
    best = 1 << max(0, (n - 1).bit_length())
    p5 = 1
    while p5 < best:
        p35 = p5
        while p35 < best:
            m = p35
            while m < n:
                m *= 2
            best = min(best, m)
            p35 *= 3
        p5 *= 5
    return best


def ssm_fft_len(length: int) -> int:
    """FFT length used by the SSM for a sequence of `length`: Nfft = 2M with M >= length
    5-smooth, so Nfft >= 2L - 1 (a linear, not circular, convolution) and each half of the
    two-sided kernel is exactly M = Q * C samples (see engine.ssm.BidirectionalSSM.two_sided)."""
    return 2 * next_fast_len(max(length, 1))


@functools.lru_cache(maxsize=64)
def kernel_grid(m: int) -> tuple[int, int]:
    """(Q, C) with Q * C == m and C the divisor of m nearest sqrt(m): the kernel's samples
    l = qC + r, 0 <= q < Q, 0 <= r < C (m is 5-smooth, so such a divisor is never far off)."""
    root = math.isqrt(m)
    best = 1
    for c in range(1, root + 1):
        if m % c == 0:
            best = c  # the largest divisor <= sqrt(m)
    other = m // best  # the smallest divisor >= sqrt(m)
    c = other if other - math.sqrt(m) < math.sqrt(m) - best else best
    return m // c, c


_DFT_CACHE: dict[tuple, tuple[Tensor, Tensor]] = {}


def real_dft_matrices(n: int, length: int, device: torch.device, dtype: torch.dtype,
                      scale: float) -> tuple[Tensor, Tensor]:
    """Real matrices equal to rfft(x, n) and irfft(X, n)[:length], as GEMMs over the time axis.

    Returns (fwd (2*Fq, length), inv (length, 2*Fq)); rows of `fwd` / columns of `inv` are
    ordered (re, im) per bin: fwd @ x gives [Re X_0, Im X_0, Re X_1, ...]. `scale` multiplies
    the forward transform (1 for norm="backward", 1/sqrt(n) for "ortho"); the inverse is scaled
    so that inv @ (fwd @ x) reproduces irfft(rfft(x, n), n)[:length] under the same norm.
    """
    key = (n, length, str(device), dtype, scale)
    hit = _DFT_CACHE.get(key)
    if hit is not None:
        return hit
    with torch.inference_mode(False):  # constants shared by training and inference calls
        out = _build_dft_matrices(n, length, device, dtype, scale)
    if len(_DFT_CACHE) > 32:
        _DFT_CACHE.clear()
    _DFT_CACHE[key] = out
    return out


def _build_dft_matrices(n: int, length: int, device: torch.device, dtype: torch.dtype,
                        scale: float) -> tuple[Tensor, Tensor]:
    fq = n // 2 + 1
    f = torch.arange(fq, dtype=torch.float64)
    t = torch.arange(length, dtype=torch.float64)
    ang = 2 * math.pi * torch.remainder(torch.outer(f, t), n) / n  # (Fq, length)
    fwd = torch.stack([torch.cos(ang), -torch.sin(ang)], dim=1).reshape(2 * fq, length) * scale
    # irfft: x_t = (1/n) sum_f w_f (Re X_f cos - Im X_f sin), w = 1 at DC / Nyquist, 2 elsewhere;
    # "ortho" divides by sqrt(n) instead of n, i.e. inverse scale = 1 / (n * scale).
    w = torch.full((fq,), 2.0, dtype=torch.float64)
    w[0] = 1.0
    if n % 2 == 0:
        w[-1] = 1.0
    inv = torch.stack([torch.cos(ang) * w[:, None], -torch.sin(ang) * w[:, None]], dim=1)
    inv = (inv.reshape(2 * fq, length) / (n * scale)).T.contiguous()
    return fwd.to(device=device, dtype=dtype).contiguous(), inv.to(device=device, dtype=dtype)


def channels_first(x: Tensor, rows: int = 1024, width: int | None = None) -> Tensor:
    """(B, L, D) -> contiguous (B, D, width) holding x transposed in its first L columns and
    zeros after them (width defaults to L; a wider buffer is an FFT input already padded).
    A plain `.transpose(1, 2).contiguous()` walks the whole tensor with a large stride on
    one side; copying `rows` positions at a time keeps both sides of each block in cache."""
    b, length, d = x.shape
    width = length if width is None else width
    if width == length and length <= 2 * rows:
        return x.transpose(1, 2).contiguous()
    out = x.new_empty(b, d, width)
    for i in range(0, length, rows):
        j = min(length, i + rows)
        out[:, :, i:j].copy_(x[:, i:j].transpose(1, 2))
    out[:, :, length:].zero_()
    return out


FLUSH_BELOW = 1e-15  # power-table magnitudes below this are set to exactly 0 (see flush_tiny)


def flush_tiny(x: Tensor, below: float = FLUSH_BELOW, inplace: bool = False) -> Tensor:
    """x with parts of magnitude < `below` set to 0 (real and imaginary parts each, no square
    root); out of place, so autograd sees it, unless `inplace`.

    Powers of fast-decaying SSM modes underflow through float32's subnormal range, and x86
    arithmetic on subnormals is tens of times slower. A dropped term of the kernel is below
    1e-15 |W|, far under float32 resolution of the kernel (whose scale is |W|)."""
    r = torch.view_as_real(x) if x.is_complex() else x
    if inplace:
        r.masked_fill_(r.abs() < below, 0)
        return x
    r = r.masked_fill(r.abs() < below, 0)
    return torch.view_as_complex(r) if x.is_complex() else r


def power_table(base: Tensor, count: int, dim: int = 0) -> Tensor:
    """[base^0, ..., base^(count-1)] stacked on a new axis at `dim` by repeated doubling:
    base.shape with `count` inserted at `dim`. Each doubling step is one multiply of a block
    of the table; parts below FLUSH_BELOW become 0 (flush_tiny), so no subnormal is ever
    formed. Without autograd the table is filled in place (no concatenations). When even the
    smallest |base|^(count-1) stays above FLUSH_BELOW (short tables, the usual training case)
    no flushing is done."""
    # nothing in the table can get that small (short tables): no flushing needed
    tiny = not (count > 1 and base.numel() and float(base.detach().abs().min()) ** (count - 1) >= FLUSH_BELOW)

    def flush(x: Tensor) -> Tensor:
        return flush_tiny(x) if tiny else x

    cur = flush(base).unsqueeze(dim)  # base^(number of rows done)
    if torch.is_grad_enabled() and base.requires_grad:
        out = torch.ones_like(cur)
        while out.shape[dim] < count:
            out = torch.cat([out, flush(out * cur)], dim=dim)
            cur = flush(cur * cur)
        return out.narrow(dim, 0, count)
    shape = list(cur.shape)
    shape[dim] = max(count, 1)
    out = base.new_empty(shape)
    out.narrow(dim, 0, 1).fill_(1)
    done = 1
    while done < count:
        m = min(done, count - done)
        block = out.narrow(dim, done, m)
        torch.mul(out.narrow(dim, 0, m), cur, out=block)
        if tiny:
            flush_tiny(block, inplace=True)
        done += m
        if done < count:
            cur = flush(cur * cur)
    return out.narrow(dim, 0, count)


def _rfft_grad_weights(n: int, fq: int, device: torch.device, dtype: torch.dtype) -> Tensor:
    """c with c = 1 at DC (and at Nyquist for even n), 1/2 elsewhere: the weights that make
    irfft(G * c) the adjoint of rfft applied to an incoming bin gradient G (Fq,)."""
    c = torch.full((fq,), 0.5, device=device, dtype=dtype)
    c[0] = 1.0
    if n % 2 == 0:
        c[-1] = 1.0
    return c


class _RealFFT(torch.autograd.Function):
    """rfft(x, n, dim=-1, norm) whose backward is ONE real inverse transform (c2r).

    torch's own backward of rfft pads the bin gradient to the full two-sided spectrum and runs
    a complex-to-complex transform, about twice the cost of a c2r one. The adjoint of a one-sided rfft is Re(sum_k G_k e^{+2 pi i k t / n}),
    which is irfft(G * c) times n (norm="backward") or times 1 (norm="ortho"), c halving the
    bins that stand for a conjugate pair (see _rfft_grad_weights)."""

    @staticmethod
    def forward(ctx, x: Tensor, n: int, norm: str) -> Tensor:
        ctx.n, ctx.norm, ctx.length = n, norm, x.shape[-1]
        return torch.fft.rfft(x, n=n, dim=-1, norm=norm)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, g: Tensor) -> tuple[Tensor, None, None]:
        n = ctx.n
        c = _rfft_grad_weights(n, g.shape[-1], g.device, g.real.dtype)
        gx = torch.fft.irfft(g * c, n=n, dim=-1, norm=ctx.norm)
        if ctx.norm == "backward":
            gx = gx.mul_(n)
        return gx[..., :ctx.length], None, None


def rfft_last(x: Tensor, n: int | None = None, norm: str = "backward") -> Tensor:
    """torch.fft.rfft over the last axis (zero-padded or cut to n), with a c2r backward."""
    n = x.shape[-1] if n is None else n
    if torch.is_grad_enabled() and x.requires_grad:
        return _RealFFT.apply(x, n, norm)
    return torch.fft.rfft(x, n=n, dim=-1, norm=norm)


class _TwoSidedConv(torch.autograd.Function):
    """Circular convolution of the zero-padded input with a real two-sided kernel, for training:
    u (B, L, D), k2 (D, Nfft) -> y (B, L, D) (a transposed view of channel-major storage),
    y[b, i, d] = sum_j k2[d, (i - j) mod Nfft] u[b, j, d] for 0 <= i < L.

    Written out so that its backward needs only real transforms: with U, G, K the rffts of
    the padded input, the padded output gradient and the kernel,
      grad u  = irfft(G * conj(K))[:L]        (correlation with the kernel)
      grad k2 = irfft(sum_b G * conj(U))      (correlation of gradient and input)
    Against autograd through rfft / mul / irfft this drops the complex-to-complex transform of
    rfft's backward, the full-size zero fills of padding (the input is padded once, while it is
    transposed, by channels_first) and the copies of strided operands."""

    @staticmethod
    def forward(ctx, u: Tensor, k2: Tensor) -> Tensor:
        length, n_fft = u.shape[1], k2.shape[-1]
        U = torch.fft.rfft(channels_first(u, width=n_fft))  # (B, D, Fq)
        K = torch.fft.rfft(k2)  # (D, Fq)
        y = torch.fft.irfft(U * K, n=n_fft)[..., :length].transpose(1, 2)  # (B, L, D)
        # the backward needs conj(U): conjugated in place, as a lazy conj() would be
        # materialised by the multiply there (a copy of the whole spectrum)
        ctx.save_for_backward(U.conj_physical_(), K)
        ctx.length = length
        return y

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, gy: Tensor) -> tuple[Tensor, Tensor]:
        Uc, K = ctx.saved_tensors  # conj(U), K
        n_fft, length = 2 * (Uc.shape[-1] - 1), ctx.length
        G = torch.fft.rfft(channels_first(gy, width=n_fft))  # (B, D, Fq)
        gu = gk = None
        if ctx.needs_input_grad[1]:
            gk = torch.fft.irfft((G * Uc).sum(0), n=n_fft)  # (D, Nfft)
        if ctx.needs_input_grad[0]:
            gu = torch.fft.irfft(G.mul_(K.conj()), n=n_fft)[..., :length].transpose(1, 2)
        return gu, gk


def two_sided_conv(u: Tensor, k2: Tensor) -> Tensor:
    """Circular convolution of u (B, L, D), zero-padded to Nfft, with the real two-sided kernel
    k2 (D, Nfft), first L outputs: (B, L, D), a transposed view. Differentiable in u and k2,
    with a backward of real transforms only (_TwoSidedConv)."""
    return _TwoSidedConv.apply(u, k2)
