"""The SFDLM's bidirectional diagonal state-space layer (S4D family), applied as one FFT convolution.

Glossary
  B, L, D  batch size, sequence length (any; no maximum), model width (channels)
  N        SSM state size per channel (cfg.d_state); n = N // 2 complex modes are stored and the
           conjugate half is implied by taking 2 * Re(...) (the S4D convention)
  A        complex diagonal state matrix per channel, A = -exp(log_a_re) + i * a_im   (D, n)
  dt       discretisation step per channel, dt = exp(log_dt)                         (D,)
  lam      ZOH-discretised state multiplier, lam = exp(dt * A)                         (D, n)
  W        output weights with the ZOH input matrix folded in: W = 2 * C * (lam - 1) / A
           (B = 1 as in S4D; one W per direction)                                      (2, D, n)
  K        SSM convolution kernel, K[l] = Re(sum_n W_n lam_n^l), l = 0..L-1            (2, D, L)
  Nfft     FFT length of the two-sided convolution, engine.fft.ssm_fft_len(L)
  Q, C     the kernel grid l = qC + r, Q * C = M = Nfft / 2 (engine.fft.kernel_grid)
  Fq       number of rfft bins, Nfft // 2 + 1

How (measurements: docs/notebook/2026-12-05-layers-performance.md):
  * the kernel is never formed with complex `exp` at size D*n*L: lam^l = lam^(qC) lam^r, with
    power tables (D, Q, n) and (D, C+1, n) built channel-major by repeated doubling, and ONE
    real batched matmul over (channel, direction), (2D, Q, 2n) @ (2D, 2n, C), whose output is
    the two-sided circular kernel itself (the backward half comes out reversed because its
    factors are);
  * both directions share one FFT convolution of length Nfft, the D skip folded in as a delta
    at lag 0;
  * at inference the frequency response is cached per (L, device, dtype) while it fits
    cfg.kernel_cache_mb per layer, invalidated by the parameters' version counters; the input
    is transposed once into channel-major rows already zero-padded to Nfft, gated there, and
    read transposed by the output projection; beyond `chunk_elems` spectrum elements the
    convolution runs over groups of channels, bounding transient memory;
  * in training the convolution is one autograd Function with a backward of real transforms
    only (engine.fft.two_sided_conv).

References (ideas only, the code is ours): S4D -- Gu et al., "On the Parameterization and
Initialization of Diagonal State Space Models" (2022) for the diagonal SSM, ZOH and the
Vandermonde kernel; S4 (Gu et al. 2021) for bidirectional kernels as a two-sided convolution.
"""

from __future__ import annotations

import math
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from engine.fft import (Path, channels_first, kernel_grid, power_table, real_dft_matrices, rfft_last, ssm_fft_len,
                        two_sided_conv)


def _versions(params: list[Tensor]) -> tuple:
    return tuple((p._version, p.data_ptr()) for p in params)


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
            return two_sided_conv(u, self.two_sided(length))  # (B, L, D) view
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
