"""Fast layers of the SFDLM denoiser: bidirectional diagonal SSM, Complex Fourier MLP, adaLN.

Glossary
  B     batch size
  L     sequence length (any; no layer here has a maximum length)
  D     model width (channels)
  N     SSM state size per channel (cfg.d_state); n = N // 2 complex modes are stored and the
        conjugate half is implied by taking 2 * Re(...) (the S4D convention)
  A     complex diagonal state matrix per channel, A = -exp(log_a_re) + i * a_im   (D, n)
  dt    discretisation step per channel, dt = exp(log_dt)                         (D,)
  lam   ZOH-discretised state multiplier, lam = exp(dt * A)                         (D, n)
  W     output weights with the ZOH input matrix folded in: W = 2 * C * (lam - 1) / A
        (B = 1 as in S4D; one W per direction)                                      (2, D, n)
  K     SSM convolution kernel, K[l] = Re(sum_n W_n lam_n^l), l = 0..L-1            (2, D, L)
  Nfft  FFT length of the two-sided convolution, 2M with M >= L 5-smooth (so >= 2L - 1)
  Fq    number of rfft bins, Nfft // 2 + 1 (SSM) or L // 2 + 1 (Fourier MLP)
  nb    number of diagonal blocks of the complex MLP (cfg.fourier_blocks); bs = D / nb
  c     conditioning vector from the diffusion time                                  (B, D)

References (ideas only, the code is ours): S4D -- Gu et al., "On the Parameterization and
Initialization of Diagonal State Space Models" (2022) for the diagonal SSM, ZOH and the
Vandermonde kernel; S4 (Gu et al. 2021) for bidirectional kernels as a two-sided convolution;
FNO / AFNO (Li et al. 2020; Guibas et al. 2021) for the block-diagonal complex MLP per Fourier
mode; DiT (Peebles & Xie 2022) for adaptive LayerNorm with zero-initialised gates.

Performance notes (measured on 2 shared CPU cores; docs/BENCHMARKS.md has the numbers):
  * the kernel is never formed with complex `exp` at size D*n*L (1.5 s at L = 4096): on the
    grid l = qC + r (Q*C = M = Nfft/2), lam^l = lam^(qC) lam^r, the power tables (D, Q, n)
    and (D, C+1, n) are built channel-major by repeated doubling (complex64, log2 C deep)
    and the L-sized work is ONE real batched matmul over (channel, direction),
    (2D, Q, 2n) @ (2D, 2n, C), whose output IS the two-sided circular kernel (the backward
    half comes out reversed because its factors are), so it needs no assembly copies;
  * both directions share ONE FFT convolution of length Nfft with a two-sided kernel, and
    the D skip is folded into it as a delta at lag 0;
  * at inference the frequency response is cached per (L, device, dtype) while it fits
    cfg.kernel_cache_mb per layer (L <= ~11k at D = 256), invalidated by parameter version
    counters; longer inputs rebuild it on every call;
  * at inference the SSM works on channel-major rows: the input is transposed once into a
    buffer already zero-padded to Nfft, gated there, and the output projection reads the
    gated rows transposed (no copy back to (L, D)); beyond `chunk_elems` spectrum elements
    (L > 16k at D = 256, B = 1) it runs over groups of channels, bounding transient memory;
  * the Fourier MLP runs over groups of blocks at long L (`chunk_elems`);
  * the Fourier MLP transposes its input to channel-major rows once (channels_first) and
    transforms along them, so the spectrum is (B, D, Fq) and each block is one complex GEMM
    without transposes; at inference GELU and the filter are applied in place;
  * for L <= cfg.direct_max_len the FFTs are replaced by cached real DFT matrices (one GEMM
    over all B*D columns);
  * in training the backward passes use real transforms only: the SSM convolution is one
    autograd Function (_TwoSidedConv) whose backward is one rfft of the output gradient and
    two irffts, and the Fourier MLP's rfft has a c2r backward (rfft_last), where torch's own
    backward of rfft is a complex-to-complex transform of twice the cost; at B = 32, L = 256,
    D = 256 on one core this made the SSM 0.82x and the Fourier MLP 0.95x as costly per
    forward + backward, and the SFDLM's training step 0.965x (bench.layers_ab, measured
    against the code before; docs/BENCHMARKS.md, "Training step");
  * the Fourier MLP's training mix is one autograd Function (_FourierMix) whose backward
    conjugates only small operands (the output gradient, the spectrum, the weights), where
    torch's backward of the second block product copied the whole hidden spectrum conjugated
    and transposed (docs/BENCHMARKS.md, ninth session).
"""

from __future__ import annotations

import functools
import math
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

Path = Literal["auto", "fft", "dft"]


# ----------------------------------------------------------------------------- helpers


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
    two-sided kernel is exactly M = Q * C samples (see BidirectionalSSM.two_sided)."""
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
    one side (7 ms at L = 8192, D = 256 on two cores); copying `rows` positions at a time
    keeps both sides of each block in cache (1.4 ms)."""
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
    arithmetic on subnormals is tens of times slower: at L = 16384 the kernel product ran at
    30 ms instead of 4 ms per layer. A dropped term of the kernel is below 1e-15 |W|, far
    under float32 resolution of the kernel (whose scale is |W|)."""
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
    a complex-to-complex transform, about twice the cost of a c2r one (10.4 against 4.2 ms at
    (32, 256, 256) on one core). The adjoint of a one-sided rfft is Re(sum_k G_k e^{+2 pi i k t / n}),
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


def _versions(params: list[Tensor]) -> tuple:
    return tuple((p._version, p.data_ptr()) for p in params)


# ----------------------------------------------------------------------------- time + norm


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


class TimeEmbedding(nn.Module):
    """t -> sinusoidal features -> MLP -> c (B, D)."""

    def __init__(self, time_dim: int, d_model: int) -> None:
        super().__init__()
        self.time_dim = time_dim
        self.mlp = nn.Sequential(nn.Linear(time_dim, d_model), nn.SiLU(),
                                 nn.Linear(d_model, d_model))

    def forward(self, t: Tensor) -> Tensor:
        return self.mlp(sinusoidal_features(t, self.time_dim))  # (B, D)


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

    def forward(self, c: Tensor) -> Tensor:
        """Modulation vectors (B, n_sub, per, 1, D): [shift, scale(, gate)] per sublayer."""
        m = self.mod(F.silu(c))  # (B, n_sub*per*D)
        return m.view(c.shape[0], self.n_sub, self.per, 1, self.d_model)


def modulated_norm(x: Tensor, shift: Tensor, scale: Tensor) -> Tensor:
    """LayerNorm without affine, then x * (1 + scale) + shift; shift, scale (B, 1, D).

    With one sequence (B = 1) the modulation is passed to layer_norm as its affine weight and
    bias: one pass over (L, D) instead of two (2.5x faster at L = 16k).
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
        # ~20 % faster at L = 16k and no (L, mult*D) intermediate in memory
        x2 = x.reshape(rows, x.shape[-1])
        out = x2.new_empty(rows, self.down.out_features)  # (B*L, D)
        w_up, w_down = self.up.weight.T, self.down.weight.T
        for s in range(0, rows, self.chunk):
            h = torch.addmm(self.up.bias, x2[s:s + self.chunk], w_up)  # (chunk, mult*D)
            torch.ops.aten.gelu_(h)
            torch.addmm(self.down.bias, h, w_down, out=out[s:s + self.chunk])
        return out.view(*x.shape[:-1], -1)


# ----------------------------------------------------------------------------- SSM


class BidirectionalSSM(nn.Module):
    """Bidirectional diagonal SSM (S4D family) applied as one two-sided FFT convolution.

    y = (K_fwd * u)_causal + (K_bwd * u)_anticausal + D_skip * u, then out(y * silu(g)) with the
    gate g = u (gate="input": a parameter-free multiplicative gate, as in H3's u * SSM(u)) or
    g = Linear(u) (gate="linear", Mamba-style; one more D x D matmul per token).
    The forward kernel acts on the sequence, the backward kernel on the reversed sequence, so
    y equals the sum of two recurrent scans (see engine.reference.ssm_reference).
    """

    def __init__(self, d_model: int, d_state: int, init: Literal["lin", "inv"] = "lin",
                 dt_min: float = 1e-3, dt_max: float = 1e-1, cache_mb: float = 24.0,
                 direct_max_len: int = 64, gate: Literal["input", "linear"] = "input") -> None:
        super().__init__()
        n = max(1, d_state // 2)
        self.d_model, self.n_modes = d_model, n
        self.cache_bytes = int(cache_mb * 2**20)
        self.direct_max_len = direct_max_len
        # initialisation draws from the global RNG (seed it for reproducible models)
        log_dt = torch.rand(d_model) * (math.log(dt_max) - math.log(dt_min)) \
            + math.log(dt_min)
        idx = torch.arange(n, dtype=torch.float32)
        a_re = torch.full((d_model, n), 0.5)
        if init == "lin":  # S4D-Lin: A_n = -1/2 + i pi n
            a_im = (math.pi * idx).expand(d_model, n).clone()
        else:  # S4D-Inv: A_n = -1/2 + i N/pi (N/(2n+1) - 1)
            a_im = (d_state / math.pi * (d_state / (2 * idx + 1) - 1)).expand(d_model, n).clone()
        self.log_dt = nn.Parameter(log_dt)  # (D,)
        self.log_a_re = nn.Parameter(torch.log(a_re))  # (D, n)
        self.a_im = nn.Parameter(a_im)  # (D, n)
        self.c = nn.Parameter(torch.randn(2, d_model, n, 2) * math.sqrt(0.5))  # (2, D, n, re/im)
        self.d_skip = nn.Parameter(torch.randn(d_model))  # (D,)
        self.gate = nn.Linear(d_model, d_model) if gate == "linear" else None
        self.out = nn.Linear(d_model, d_model)
        self._cache: dict[tuple, tuple[tuple, Tensor]] = {}

    # -- kernel ---------------------------------------------------------------------------

    def ssm_params(self) -> list[Tensor]:
        return [self.log_dt, self.log_a_re, self.a_im, self.c, self.d_skip]

    def discrete(self, ch: slice = slice(None)) -> tuple[Tensor, Tensor, Tensor]:
        """(log|lam|, arg lam, W) in float64 for channels `ch`: (Dc, n), (Dc, n), (2, Dc, n)."""
        dt = torch.exp(self.log_dt[ch].double())[:, None]  # (Dc, 1)
        a_re = -torch.exp(self.log_a_re[ch].double())  # (Dc, n)
        a_im = self.a_im[ch].double()
        A = torch.complex(a_re, a_im)
        lam = torch.exp(dt * A)  # (Dc, n), small complex tensor
        c = torch.view_as_complex(self.c[:, ch].double().contiguous())  # (2, Dc, n)
        W = 2 * c * (lam - 1) / A
        return dt * a_re, dt * a_im, W

    def _grid_factors(self, m: int, ch: slice) -> tuple[Tensor, Tensor, Tensor]:
        """Factors of the two halves of the two-sided kernel on the grid l = qC + r (Q*C = m).

        Returns P (Dc, 2, Q, 2n), the transposed right factors Rt (Dc, 2, C, 2n) and K_bwd[0]
        (Dc,) float64; the second axis is the half (forward, backward) and columns are
        interleaved per mode, (n, re/im). P[:, 0, q] holds conj(W_fwd lam^(qC)) as [Re, -Im]
        for q = 0..Q-1, P[:, 1, q] conj(W_bwd lam^((Q-1-q)C)) (q reversed); Rt[:, 0, r] holds
        lam^r as [Re, Im], r = 0..C-1, and Rt[:, 1, r] lam^(C-r) (powers C..1). So per channel
        P[:, 0] @ Rt[:, 0]^T = K_fwd[0..m-1] and P[:, 1] @ Rt[:, 1]^T = K_bwd[m..1], in order.
        Every table is built channel-major by repeated doubling in complex64 (log2 C
        multiplications deep) from lam and lam^C formed in complex128 on (Dc, n), so no
        transcendental function is evaluated at size D*n*L and no table is transposed.
        """
        q_n, chunk = kernel_grid(m)
        loga, theta, W = self.discrete(ch)
        d, n = loga.shape
        lam = torch.polar(torch.exp(loga), theta)  # (Dc, n) complex128
        lam_c = torch.polar(torch.exp(loga * chunk), torch.remainder(theta * chunk, 2 * math.pi))
        tab = power_table(lam.to(torch.complex64), chunk + 1, dim=1)  # lam^r (Dc, C+1, n)
        pw = power_table(lam_c.conj().to(torch.complex64), q_n, dim=1)  # conj(lam^(qC)) (Dc, Q, n)
        wc = W.conj().to(torch.complex64).transpose(0, 1)[:, :, None]  # (Dc, 2, 1, n)
        if torch.is_grad_enabled() and tab.requires_grad:
            rt = torch.stack([tab[:, :chunk], tab[:, 1:].flip(1)], dim=1)  # (Dc, 2, C, n)
            P = torch.stack([pw, pw.flip(1)], dim=1) * wc  # (Dc, 2, Q, n)
        else:  # the same, written into preallocated halves
            rt = tab.new_empty(d, 2, chunk, n)
            rt[:, 0] = tab[:, :chunk]
            rt[:, 1] = tab[:, 1:].flip(1)
            P = pw.new_empty(d, 2, q_n, n)
            torch.mul(pw, wc[:, 0], out=P[:, 0])
            torch.mul(pw.flip(1), wc[:, 1], out=P[:, 1])
        return torch.view_as_real(P).flatten(3), torch.view_as_real(rt).flatten(3), \
            W[1].real.sum(-1)

    def _raw_two_sided(self, n_fft: int, ch: slice) -> tuple[Tensor, Tensor]:
        """(k2 without the lag-0 terms (Dc, n_fft), K_bwd[0] (Dc,) float64): k2[:, :m] holds
        K_fwd[0..m-1] and k2[:, m:] holds K_bwd[m..1], m = n_fft / 2, straight out of ONE
        batched matmul (Dc*2, Q, 2n) @ (Dc*2, 2n, C) over (channel, half)."""
        P, rt, kb0 = self._grid_factors(n_fft // 2, ch)
        d = P.shape[0]
        k2 = torch.bmm(P.flatten(0, 1), rt.flatten(0, 1).transpose(1, 2))  # (Dc*2, Q, C)
        return k2.view(d, n_fft), kb0

    def kernel(self, length: int, ch: slice = slice(None)) -> Tensor:
        """Time-domain kernels K (2, Dc, length) in float32, K[k, d, l] = Re(sum_n W_k lam^l)
        (for inspection and tests; the convolution uses two_sided directly)."""
        raw, kb0 = self._raw_two_sided(ssm_fft_len(length), ch)
        # raw[:, n_fft - j] = K_bwd[j]: reversed, column j - 1 is K_bwd[j]
        bwd = torch.cat([kb0.to(raw.dtype)[:, None], raw.flip(-1)[:, :length - 1]], dim=1)
        return torch.stack([raw[:, :length], bwd])

    def two_sided(self, length: int, ch: slice = slice(None)) -> Tensor:
        """The combined two-sided circular kernel of length n_fft = ssm_fft_len(length), plus
        the D skip: (Dc, n_fft).

        k2[j] = K_fwd[j] (0 <= j < m), k2[n_fft - j] = K_bwd[j] (1 <= j <= m), and
        k2[0] = K_fwd[0] + K_bwd[0] + D (the skip is a delta at lag 0), m = n_fft / 2 >= L.
        Circular convolution with the zero-padded u gives both scans' sum plus D u on
        0 <= i < L: it reads k2 only at lags 0..L-1 and n_fft-L+1..n_fft-1, so the samples
        between (lags L..m-1 of each half, beyond the sequence) never reach the output.
        """
        k2, kb0 = self._raw_two_sided(ssm_fft_len(length), ch)
        extra = (kb0.to(k2.dtype) + self.d_skip[ch])  # (Dc,)
        if torch.is_grad_enabled() and extra.requires_grad:
            return torch.cat([k2[:, :1] + extra[:, None], k2[:, 1:]], dim=1)
        k2[:, 0] += extra
        return k2

    def _freq(self, length: int, ch: slice = slice(None)) -> Tensor:
        """rfft of the two-sided kernel with the D skip for channels `ch`: complex (Dc, Fq)."""
        return torch.fft.rfft(self.two_sided(length, ch), dim=-1)  # (Dc, Fq)

    def freq_response(self, length: int, path: str) -> Tensor | None:
        """Cached frequency response: complex (D, Fq) for "fft", real (Fq, 2, D) [re, im] for
        "dft". Cached at inference when it fits the per-layer budget (cfg.kernel_cache_mb);
        returns None when it would not be cached and the FFT path can build it chunk by chunk.
        """
        n_fft = ssm_fft_len(length)
        use_cache = not (torch.is_grad_enabled() and self.log_dt.requires_grad)
        nbytes = self.d_model * (n_fft // 2 + 1) * 8
        fits = use_cache and nbytes <= self.cache_bytes
        key = (length, path, str(self.log_dt.device), self.out.weight.dtype)
        if fits:
            ver = _versions(self.ssm_params())
            hit = self._cache.get(key)
            if hit is not None and hit[0] == ver:
                return hit[1]
        elif path == "fft":
            return None
        Kf = self._freq(length)  # (D, Fq)
        if path == "dft":
            Kf = torch.view_as_real(Kf.T.contiguous()).permute(0, 2, 1).contiguous()  # (Fq, 2, D)
        if fits:
            if len(self._cache) >= 4:
                self._cache.pop(next(iter(self._cache)))
            self._cache[key] = (ver, Kf)
        return Kf

    def clear_cache(self) -> None:
        self._cache.clear()

    # -- forward --------------------------------------------------------------------------

    def conv(self, u: Tensor, path: Path = "auto") -> Tensor:
        """Two-sided SSM convolution plus D skip: (B, L, D) -> (B, L, D) (at inference on the
        FFT path a transposed view of a channel-major result).

        FFT path: one rfft and one irfft of length Nfft serve both directions. Training
        transforms all channels at once (autograd); inference works on channel-major rows
        (see _conv_rows).
        """
        b, length, d = u.shape
        path = self._path(path, length)
        n_fft = ssm_fft_len(length)
        if path == "dft":
            Kf = self.freq_response(length, "dft")  # (Fq, 2, D)
            fwd, inv = real_dft_matrices(n_fft, length, u.device, u.dtype, 1.0)
            U = torch.matmul(fwd, u).unflatten(1, (-1, 2))  # (B, Fq, 2, D)
            ur, ui = U[:, :, 0], U[:, :, 1]
            kr, ki = Kf[:, 0], Kf[:, 1]
            Y = torch.stack([ur * kr - ui * ki, ur * ki + ui * kr], dim=2)  # (B, Fq, 2, D)
            return torch.matmul(inv, Y.flatten(1, 2))  # (B, L, D)
        if not torch.is_grad_enabled():
            return self._conv_rows(u)[0].transpose(1, 2)  # (B, L, D) view
        kf = self.freq_response(length, "fft")  # cached only for frozen SSM parameters
        if kf is None:  # training the kernel: real transforms only, forward and backward
            return _TwoSidedConv.apply(u, self.two_sided(length))  # (B, L, D) view
        U = rfft_last(u.transpose(1, 2), n=n_fft) * kf  # (B, D, Fq)
        return torch.fft.irfft(U, n=n_fft)[..., :length].transpose(1, 2)  # (B, L, D) view

    def _path(self, path: Path, length: int) -> Path:
        if path == "auto":
            return "dft" if length <= self.direct_max_len else "fft"
        return path

    def _conv_rows(self, u: Tensor) -> tuple[Tensor, Tensor]:
        """Inference FFT convolution on channel-major rows: (y_t, u_t), y_t (B, D, L) the
        convolution plus D skip (our own storage, possibly rows of a longer buffer) and u_t
        (B, D, >= L) the input made channel-major (channels_first), whose first L columns
        the caller may overwrite.

        Rows are contiguous, where torch.fft is fastest. Up to `chunk_elems` spectrum
        elements (L <= 16k at D = 256, B = 1) all channels go at once into a buffer already
        zero-padded to Nfft; longer inputs run over groups of channels, which bounds the
        transient memory; an uncached kernel is then built per group too.
        """
        b, length, d = u.shape
        n_fft = ssm_fft_len(length)
        Kf = self.freq_response(length, "fft")  # (D, Fq) or None
        step = max(8, min(d, self.chunk_elems // (b * n_fft)))
        if step >= d:
            ut = channels_first(u, width=n_fft)  # (B, D, Nfft), zeros after L
            kf = Kf if Kf is not None else self._freq(length)  # (D, Fq)
            U = torch.fft.rfft(ut).mul_(kf)  # (B, D, Fq)
            return torch.fft.irfft(U, n=n_fft)[..., :length], ut
        ut = channels_first(u)  # (B, D, L)
        yt = u.new_empty(b, d, length)  # (B, D, L)
        for c0 in range(0, d, step):
            ch = slice(c0, min(d, c0 + step))
            kf = Kf[ch] if Kf is not None else self._freq(length, ch)  # (Dc, Fq)
            U = torch.fft.rfft(ut[:, ch], n=n_fft).mul_(kf)  # (B, Dc, Fq)
            yt[:, ch] = torch.fft.irfft(U, n=n_fft)[..., :length]
        return yt, ut

    chunk_elems = 1 << 23  # complex spectrum elements per FFT group (B * Dc * Nfft)

    def forward(self, u: Tensor, path: Path = "auto") -> Tensor:
        b, length, d = u.shape
        if not torch.is_grad_enabled() and self.gate is None \
                and self._path(path, length) == "fft":
            # inference, input gate: gate channel-major (both operands are rows) and let the
            # output GEMM read the transposed product, so no (L, D) <-> (D, L) copy of y
            yt, ut = self._conv_rows(u)
            zt = yt.mul_(F.silu(ut[..., :length], inplace=True))  # (B, D, L)
            out = u.new_empty(b, length, self.out.out_features)
            for i in range(b):
                torch.addmm(self.out.bias, zt[i].T, self.out.weight.T, out=out[i])
            return out
        y = self.conv(u, path)  # (B, L, D), possibly a transposed view
        z = self.gate(u) if self.gate is not None else u  # (B, L, D)
        if torch.is_grad_enabled():
            z = F.silu(z) * y
        else:  # in place unless z is the caller's u
            z = F.silu(z, inplace=z is not u).mul_(y)
        return self.out(z)


# ----------------------------------------------------------------------------- Fourier MLP


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
        Computed per call: one (2Dc, K) @ (K, Fq) product (~1 ms at L = 16k)."""
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
        for k0 in range(0, nb, group):
            k = slice(k0, min(nb, k0 + group))
            H = torch.matmul(w1[k], Xb[:, k]).add_(b1[k])  # (B, g, h, Fq)
            torch.ops.aten.gelu_(torch.view_as_real(H))
            ch = slice(k.start * bs, k.stop * bs)
            G = self.filter(fq, X.device, X.real.dtype, ch).view(-1, bs, fq)  # (g, bs, Fq)
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
        # a transform along contiguous rows is ~4-7x cheaper than along dim 1 here; in
        # training rfft_last's backward is one c2r transform (torch's own is c2c)
        X = rfft_last(channels_first(x), norm="ortho")  # (B, D, Fq)
        y = torch.fft.irfft(self.mix(X), n=length, dim=-1, norm="ortho")  # (B, D, L)
        return y.transpose(1, 2)  # (B, L, D) view
