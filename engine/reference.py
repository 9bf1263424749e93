"""Slow, obviously correct versions of the fast layers and loss kernels, used only by tests.

Glossary (as in engine.ssm, engine.fourier_mlp and engine.kernels)
  B, L, D   batch, sequence length, channels
  n         complex SSM modes per channel (d_state // 2; the conjugates are implied by 2 Re)
  lam       exp(dt * A), ZOH state multiplier (D, n)
  Bbar      (lam - 1) / A, ZOH input matrix for B = 1 (D, n)
  C         output weights per direction (2, D, n)
  Fq        L // 2 + 1 rfft bins
  V, N      vocabulary size; positions of a fused head's features h (N, D), head weights W (V, D)

The layer references take the SAME parameter tensors as the fast modules and compute in complex128:
  * ssm_reference: an explicit recurrent scan x_k = lam x_{k-1} + Bbar u_k, y_k = 2 Re(C x_k),
    run forward over the sequence and again over the reversed sequence, summed, plus D u.
  * fourier_reference: an explicit DFT matrix (no FFT), the complex MLP written with complex
    matmuls, the filter evaluated per bin, then the explicit inverse DFT with Hermitian weights.
The kernel references form the whole logits and let autograd write every gradient:
  * uniform_integrand_reference: the row formula (engine.kernels.uniform_rows, plain torch ops)
    over all positions at once, differentiated by autograd instead of the closed form.
  * head_integrand_reference, head_cross_entropy_reference: the logits h @ W.T formed whole,
    then the integrand or a log-softmax cross-entropy, weighted and summed.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

from engine.fourier_mlp import ComplexFourierMLP
from engine.kernels import FORBIDDEN_LOGIT, uniform_rows
from engine.ssm import BidirectionalSSM


def ssm_scan(lam: Tensor, bbar: Tensor, c: Tensor, u: Tensor) -> Tensor:
    """Causal diagonal SSM by recurrence. lam, bbar, c: (D, n) complex; u: (B, L, D) -> (B, L, D)."""
    b, length, d = u.shape
    x = torch.zeros(b, d, lam.shape[1], dtype=torch.complex128)  # (B, D, n) state
    ys = []
    for k in range(length):
        x = lam * x + bbar * u[:, k, :, None]
        ys.append(2 * (c * x).sum(-1).real)  # (B, D)
    return torch.stack(ys, dim=1) if ys else u.new_zeros(b, 0, d)  # (B, L, D)


def ssm_conv_reference(layer: BidirectionalSSM, u: Tensor) -> Tensor:
    """Forward scan + backward scan over the reversed sequence + D skip, complex128 -> float64."""
    u = u.detach().double()
    dt = torch.exp(layer.log_dt.detach().double())[:, None]  # (D, 1)
    A = torch.complex(-torch.exp(layer.log_a_re.detach().double()), layer.a_im.detach().double())
    lam = torch.exp(dt * A)  # (D, n)
    bbar = (lam - 1) / A
    c = torch.view_as_complex(layer.c.detach().double().contiguous())  # (2, D, n)
    y_fwd = ssm_scan(lam, bbar, c[0], u)
    y_bwd = ssm_scan(lam, bbar, c[1], u.flip(1)).flip(1)
    return y_fwd + y_bwd + layer.d_skip.detach().double() * u


def ssm_reference(layer: BidirectionalSSM, u: Tensor) -> Tensor:
    """The whole SSM sublayer (conv, gate, output linear) in float64."""
    y = ssm_conv_reference(layer, u)
    u64 = u.detach().double()
    g = u64 if layer.gate is None else F.linear(u64, layer.gate.weight.double(),
                                                  layer.gate.bias.double())
    z = F.silu(g)
    return F.linear(y * z, layer.out.weight.double(), layer.out.bias.double())


def fourier_reference(layer: ComplexFourierMLP, x: Tensor) -> Tensor:
    """Complex Fourier MLP with explicit DFT matrices in complex128: (B, L, D) -> (B, L, D)."""
    x = x.detach().double()
    b, length, d = x.shape
    fq = length // 2 + 1
    t = torch.arange(length, dtype=torch.float64)
    f = torch.arange(fq, dtype=torch.float64)
    dft = torch.exp(-2j * math.pi * torch.outer(f, t) / length) / math.sqrt(length)  # (Fq, L)
    X = torch.einsum("ft,btd->bfd", dft, x.to(torch.complex128))  # (B, Fq, D)
    nb, bs = layer.n_blocks, layer.bs
    w1 = torch.view_as_complex(layer.w1.detach().double().contiguous())  # (nb, h, bs)
    w2 = torch.view_as_complex(layer.w2.detach().double().contiguous())  # (nb, bs, h)
    b1 = torch.view_as_complex(layer.b1.detach().double().contiguous())  # (nb, h)
    Xb = X.reshape(b, fq, nb, bs)
    H = torch.einsum("bfki,khi->bfkh", Xb, w1) + b1  # (B, Fq, nb, h)
    H = torch.complex(F.gelu(H.real), F.gelu(H.imag))
    Y = torch.einsum("bfkh,kih->bfki", H, w2).reshape(b, fq, d)  # (B, Fq, D)
    fn = f / (fq - 1) if fq > 1 else f * 0
    k = torch.arange(layer.filt.shape[0], dtype=torch.float64)
    filt = torch.view_as_complex(layer.filt.detach().double().contiguous())  # (K, D)
    G = torch.cos(math.pi * fn[:, None] * k[None]).to(torch.complex128) @ filt  # (Fq, D)
    Y = Y + G * X
    # inverse real DFT: x_t = sum over all L bins with Hermitian symmetry, Im of DC/Nyquist dropped
    Y = Y.clone()
    Y[:, 0] = Y[:, 0].real
    if length % 2 == 0:
        Y[:, -1] = Y[:, -1].real
    w = torch.full((fq,), 2.0, dtype=torch.float64)
    w[0] = 1.0
    if length % 2 == 0:
        w[-1] = 1.0
    idft = torch.exp(2j * math.pi * torch.outer(t, f) / length) * w / math.sqrt(length)  # (L, Fq)
    return torch.einsum("tf,bfd->btd", idft, Y).real


def uniform_integrand_reference(logits: Tensor, x0: Tensor, z: Tensor, alpha: Tensor, beta: Tensor,
                                forbidden: Tensor | None = None) -> Tensor:
    """engine.kernels.uniform_integrand by plain autograd: f (B, L) float64 for logits (B, L, V),
    ids x0 and z (B, L), alpha and beta (B, 1) float64, `forbidden` (V,) bool or None."""
    B, L, V = logits.shape
    lg = logits.to(torch.float64 if logits.dtype == torch.float64 else torch.float32)
    if forbidden is not None:
        lg = lg.masked_fill(forbidden, FORBIDDEN_LOGIT)
    per_row = lambda v: v.expand(B, L).reshape(-1, 1)  # (B, 1) -> (B*L, 1)
    f, _ = uniform_rows(lg.reshape(-1, V), x0.reshape(-1), z.reshape(-1), per_row(alpha), per_row(beta), V)
    return f.view(B, L)


def head_integrand_reference(h: Tensor, W: Tensor, x0: Tensor, z: Tensor, alpha: Tensor, beta: Tensor,
                             scale: Tensor, forbidden: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """engine.kernels.head_integrand by plain autograd: (sum of scale * f, f (B, L)) with f the
    reference integrand of the logits h @ W.T (B, L, V), formed whole."""
    f = uniform_integrand_reference(h @ W.T, x0, z, alpha, beta, forbidden)  # (B, L)
    return (scale.to(torch.float64) * f).sum(), f


def head_cross_entropy_reference(h: Tensor, W: Tensor, target: Tensor, weight: Tensor,
                                 forbidden: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """engine.kernels.head_cross_entropy by plain autograd: (sum of weight * nll, nll (N,)) for
    nll = -log softmax(h @ W.T)[target] with the `forbidden` ids at -inf (probability 0)."""
    logits = h @ W.T  # (N, V)
    if forbidden is not None:
        logits = logits.masked_fill(forbidden, float("-inf"))
    nll = -torch.log_softmax(logits, dim=-1).gather(-1, target[:, None])[:, 0].to(torch.float64)  # (N,)
    return (weight.to(torch.float64) * nll).sum(), nll
