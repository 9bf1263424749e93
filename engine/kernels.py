"""Fused loss kernels: the uniform-noise integrand and the tied head fused with each noise's loss.

The losses of engine.diffusion call these. Each one works a block of positions at a time and
writes its gradient in closed form (or in the forward pass, for the fused head), so that
neither the (B, L, V) logits nor autograd's intermediates over them are kept in memory.
engine.reference holds a plain-autograd version of each, and tests/test_kernels.py checks that
the two agree on values and gradients.

Glossary (as in engine.diffusion)
  B, L, V, D  batch, sequence length, vocabulary size, model width
  N, R        positions flattened (B * L, or a selection of them); positions in one block
  h, W        features (N, D) and tied head weights (V, D): the logits are h W^T
  x0, z       clean ids and the noisy ids x_t at the same positions (N,)
  alpha, beta alpha_t and beta_t = -alpha'_t / alpha_t per position (R, 1) float64
  A, C        1 - alpha_t (at least 1e-30) and V alpha_t + A (xbar at x0)
  xbar, xbarθ UDLM's scaled marginals V alpha x + A of x = onehot(x0) and of x = x̂0
  r, ρ        xbar_j / xbar_z and xbarθ_j / xbarθ_z
  f           the uniform-noise integrand per position (UniformDiffusion.integrand), float64
  forbidden   (V,) bool ids that x̂0 gives probability exactly 0; `cols` the same as indices
  scale       (N,) float64 weights of the fused sums (0 at clean positions)
  work dtype  float64 for float64 inputs, float32 otherwise

  uniform_integrand   f of whole logits (B, L, V), a block of positions at a time, with a
                      closed-form backward (_UniformIntegrand)
  head_integrand      sum of scale * f of the logits h W^T, the head fused in: the logits are
                      formed a block at a time and their gradient in h and W is worked out in
                      the forward pass (_FusedHeadSum), so the logits are never kept
  head_cross_entropy  the same fusion for the absorbing loss: a weighted sum of -log x̂0(target)
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor

# Logit written at forbidden ids: exp(FORBIDDEN_LOGIT - anything finite) is exactly 0 in float32/64,
# and unlike -inf it keeps gradients finite when every id but one is forbidden.
FORBIDDEN_LOGIT = -1e9


def _work_dtype(x: Tensor) -> torch.dtype:
    return torch.float64 if x.dtype == torch.float64 else torch.float32


def forbidden_columns(forbidden: Tensor | None) -> Tensor | None:
    """The ids of a (V,) bool mask as an index tensor, or None when there is no mask."""
    return None if forbidden is None else forbidden.nonzero()[:, 0]


def mask_forbidden(logits: Tensor, cols: Tensor | None) -> Tensor:
    """Logits in the work dtype with the forbidden ids `cols` (see forbidden_columns), if any,
    at FORBIDDEN_LOGIT (a copy, then those few columns filled: cheaper than a masked pass)."""
    lg = logits.to(_work_dtype(logits))
    if cols is None:
        return lg
    lg = lg.clone() if lg is logits else lg
    return lg.index_fill_(-1, cols, FORBIDDEN_LOGIT)


# ----------------------------------------------------------------------------- uniform integrand


def uniform_rows(lg: Tensor, x0: Tensor, z: Tensor, alpha: Tensor, beta: Tensor, V: int,
                 coefficients: bool = False, keep: list[Tensor] | None = None) -> tuple[Tensor, Tensor | None]:
    """UniformDiffusion.integrand's f for R positions: lg (R, V) masked logits (float32, or
    float64), x0 and z (R,) ids, alpha and beta (R, 1) float64. Returns f (R,) float64 and,
    with `coefficients`, the per-position coefficients of its gradient (R, 7) float64:
    [c1, c2, c3, g_z, g_x0, lse, log(V alpha / A)] (derived below). Plain torch ops, so
    autograd through it is the reference for the closed-form gradient (engine.reference). A
    `keep` list gets the (R, V) scratch e = exp(s) and w appended, for _logit_grad_kept.

    f = (beta / V) K, with UDLM's bracket K = sum_{j != z} r_j log(r_j / ρ_j) + V / xbarθ_z
    - V / xbar_z regrouped: with ℓ_j = log xbarθ_j, D = sum_{j != x0} (ℓ_z - ℓ_j),
    δ = 1 - x̂0(x0) and u = log(V alpha / A) + log x̂0(z),
      z == x0:  K = (V-1)(A/C) log(A/C) + (A/C) D + V^2 alpha δ / (xbarθ_z C)
      z != x0:  K = -(C/A) log1p(-V alpha δ / C) - (V-1) softplus(u)
                    + (V/A) (softplus(u) - sigmoid(u)) + D
    (the same sum, grouped so that no two large terms cancel: every piece is 0 for a denoiser
    that puts all its mass on x0). δ comes from a log-sum-exp over the other ids. Where
    1 - alpha_t underflows (t ~ 0), A is taken as 1e-30.

    Every (R, V) quantity derives from s_j = log x̂0_j + log(V alpha / A): ell_j = log xbarθ_j
    = log A + softplus(s_j) and w_j = sigmoid(s_j), so a block costs one log-sum-exp and a few
    element-wise passes; per-position values (at z and x0) are recomputed in float64."""
    wd, f64 = lg.dtype, torch.float64
    A = (1.0 - alpha).clamp_min(1e-30)  # alpha rounds to 1 for t ~ 0; keep the formulas finite
    C = V * alpha + A
    log_a = torch.log(A)
    log_ratio = torch.log(V * alpha) - log_a  # log(V alpha / A)

    lse = torch.logsumexp(lg, dim=-1, keepdim=True)  # (R, 1)
    lse64 = lse.to(f64)
    s = lg - (lse64 - log_ratio).to(wd)  # (R, V): log x̂0 + log(V alpha / A)
    # ell - log A = softplus(s) (log1p(exp) is faster here than F.softplus; exp cannot
    # overflow: s <= log(V alpha / A) <= log V + 69 with A >= 1e-30)
    e = torch.exp(s)  # (R, V): V alpha x̂0 / A
    sp_all = torch.log1p(e)
    # D = sum_{j != x0} (ell_z - ell_j) = (V-1) sp_z - sum_{j != x0} sp_j: log A cancels
    # exactly (no float32 rounding of log A in every term). The sum leaves x0 out before adding
    # (x̂0(x0) near 1 would otherwise swamp the small terms), so float32's cascade sum is as
    # accurate as the terms are (a float64 accumulation costs several times more per row)
    S_rest = _sum_without(sp_all, x0)  # (R, 1)

    logp_x0 = lg.gather(-1, x0[:, None]).to(f64) - lse64  # (R, 1) log x̂0(x0)
    p_x0 = torch.exp(logp_x0)
    # delta = 1 - x̂0(x0), x̂0(x0) and log x̂0(x0), each from the form that keeps its relative
    # accuracy: where x̂0(x0) > 1/2, delta from a log-sum-exp over the other ids (those rows
    # only) and log x̂0(x0) = log1p(-delta), not lg - lse (whose float32 rounding, ~1e-6, would
    # swamp a delta that small, and V - 1 terms of f scale it)
    delta = 1.0 - p_x0
    hi = (p_x0[:, 0] > 0.5).nonzero()[:, 0]
    if hi.numel():
        rest = lg[hi].scatter(-1, x0[hi, None], FORBIDDEN_LOGIT)  # the logits without x0
        delta = delta.index_copy(0, hi, torch.exp(torch.logsumexp(rest, dim=-1, keepdim=True).to(f64) - lse64[hi]))
    delta = delta.clamp(0.0, 1.0)
    p_x0 = torch.where(p_x0 > 0.5, 1.0 - delta, p_x0)
    logp_x0 = torch.where(p_x0 > 0.5, torch.log1p(-delta), logp_x0)

    same = (z == x0)[:, None]  # (R, 1)
    logp_z = torch.where(same, logp_x0, lg.gather(-1, z[:, None]).to(f64) - lse64)  # log x̂0(z)
    ratio = A / C
    u = log_ratio + logp_z  # s_z in float64
    sp, sg = F.softplus(u, threshold=40.0), torch.sigmoid(u)  # ell_z - log A and w_z
    D = (V - 1) * sp - S_rest
    exp_mz = torch.exp(-(log_a + sp))  # 1 / xbarθ_z
    # z == x0
    k_same = (V - 1) * ratio * torch.log(ratio) + ratio * D + (V * V) * alpha * delta * exp_mz / C
    # z != x0
    q = A / C + (V * alpha / C) * p_x0  # = 1 - (V alpha / C) delta, without the cancellation
    k_diff = -(C / A) * torch.log(q) - (V - 1) * sp + (V / A) * (sp - sg) + D
    f = (beta / V * torch.where(same, k_same, k_diff))[:, 0]
    if not coefficients:
        return f, None
    # d f / d lg_i = beta/V (c1 p_i + c2 w_i + c3 w_i p_i) at every i but z and x0, where
    # p = x̂0 and w_i = V alpha p_i / xbarθ_i = sigmoid(s_i), W = sum_i w_i; the entries at z
    # and x0 are written separately, in float64 (g_z, g_x0), because there large terms cancel.
    # From dp_j/dlg_i = p_j ([i = j] - p_i):
    #   dD_i = -w_i + kappa p_i + (V-1) w_z [i = z] + w_x0 [i = x0],
    #   kappa = W - w_x0 - (V-1) w_z;  ddelta_i = p_x0 (p_i - [i = x0]);
    #   d ell_z_i = w_z ([i = z] - p_i);  d log p_z_i = [i = z] - p_i.
    w = torch.sigmoid(s)  # (R, V)
    if keep is not None:  # for _logit_grad_kept (w is zeroed at x0 below, which it overwrites)
        keep += [e, w]
    w_z = sg
    w_x0 = torch.sigmoid(log_ratio + logp_x0)
    W_rest = _sum_without(w, x0)  # W - w_x0
    p_z = torch.exp(logp_z)
    kappa = W_rest - (V - 1) * w_z
    va_a = V * alpha / A
    # z == x0: K = ... + ratio D + b delta, b = V^2 alpha e^(-ell_z) / C
    b = (V * V) * alpha * exp_mz / C
    c1_same = ratio * kappa + b * (p_x0 + delta * w_z)
    g_same = ratio * (W_rest * p_x0 + (V - 1) * w_z * delta) - b * (p_x0 + delta * w_z) * delta
    # z != x0: the log(q) term contributes gamma ddelta_i, gamma = va_a / q, the softplus and
    # sigmoid terms eta d log p_z_i, eta = -(V-1) sigmoid(u) + (V/A) sigmoid(u)^2, and D its dD_i.
    # At i != z, x0 that is (gamma p_x0 - eta + kappa) p_i - w_i; since w_i = va_a p_i (1 - w_i),
    # = (gamma p_x0 - va_a - eta + kappa) p_i + va_a w_i p_i, with gamma p_x0 - va_a in closed form
    gamma = va_a / q
    eta = -(V - 1) * sg + (V / A) * sg * sg
    c1_diff = -(V * alpha / C) * delta / q - eta + kappa
    gz_diff = eta * -torch.expm1(logp_z) + (gamma * p_x0 + kappa) * p_z + (V - 2) * w_z
    gx0_diff = -gamma * p_x0 * delta + (kappa - eta) * p_x0
    scale = beta / V
    zero = torch.zeros_like(ratio)
    c1 = scale * torch.where(same, c1_same, c1_diff)
    c2 = scale * torch.where(same, -ratio, zero)
    c3 = scale * torch.where(same, zero, va_a)
    g_z = scale * torch.where(same, g_same, gz_diff)
    g_x0 = scale * torch.where(same, g_same, gx0_diff)
    coef = torch.cat([c1, c2, c3, g_z, g_x0, lse64, log_ratio.expand_as(c1)], dim=1)
    return f, coef


def _sum_without(x: Tensor, ids: Tensor) -> Tensor:
    """Row sums of x (R, V) leaving out column ids[r] of each row, as float64 (R, 1). Without
    autograd the column is zeroed in place (x is the caller's scratch)."""
    x = x.scatter(-1, ids[:, None], 0.0) if x.requires_grad else x.scatter_(-1, ids[:, None], 0.0)
    return x.sum(-1, keepdim=True).to(torch.float64)


def _row_chunk(device: torch.device, vocab: int) -> int:
    """Positions per block: ~1 M logits (4 MiB in float32, cache-sized) on a CPU; one block
    on an accelerator, where a block's passes are not bound by a cache."""
    return max(1, (1 << 20) // vocab) if device.type == "cpu" else 1 << 30


def _row_blocks(logits: Tensor):
    """Row slices of logits.reshape(-1, V) in blocks of _row_chunk positions."""
    V = logits.shape[-1]
    rows = logits.numel() // V
    step = _row_chunk(logits.device, V)
    for r0 in range(0, rows, step):
        yield slice(r0, min(rows, r0 + step))


def _logit_grad(lg: Tensor, out: Tensor, lse: Tensor, log_ratio: Tensor, g: Tensor, z: Tensor,
                x0: Tensor, cols: Tensor | None) -> Tensor:
    """d f / d logits of R positions into `out` (R, V) in the work dtype (`out` may be `lg`):
    lg (R, V) the logits, lse and log_ratio (R, 1) from uniform_rows' coefficients, g (R, 5)
    the coefficients c1, c2, c3, g_z, g_x0 already scaled by the upstream gradient, `cols` the
    forbidden ids (their entries set to 0) or None."""
    torch.sub(lg, lse, out=out)  # log x̂0
    w = torch.add(out, log_ratio).sigmoid_()  # (R, V)
    out.exp_()  # x̂0
    out.mul_(torch.addcmul(g[:, 0:1], w, g[:, 2:3])).addcmul_(w, g[:, 1:2])  # p (c1 + c3 w) + c2 w
    return _write_ids(out, g, z, x0, cols)


def _logit_grad_kept(out: Tensor, e: Tensor, w: Tensor, coef: Tensor, scale: Tensor, z: Tensor,
                     x0: Tensor, cols: Tensor | None) -> Tensor:
    """_logit_grad from what uniform_rows kept (`keep`), with no transcendental pass: x̂0_i =
    e_i A / (V alpha), so p (c1 + c3 w) + c2 w = e (c1' + c3' w) + c2 w with c1', c3' = c1, c3
    times A / (V alpha) = exp(-coef[:, 6]). coef (R, 7) float64 from uniform_rows, scale (R,)
    the upstream weights; into `out` (R, V) in the work dtype."""
    g = scale[:, None] * coef[:, :5]  # (R, 5) float64
    g[:, 0:3:2] *= torch.exp(-coef[:, 6:7])  # c1', c3'
    g = g.to(out.dtype)
    torch.mul(e, torch.addcmul(g[:, 0:1], w, g[:, 2:3]), out=out).addcmul_(w, g[:, 1:2])
    return _write_ids(out, g, z, x0, cols)


def _write_ids(out: Tensor, g: Tensor, z: Tensor, x0: Tensor, cols: Tensor | None) -> Tensor:
    """The gradient's entries written apart: g_z at z, g_x0 at x0 (g's columns 3 and 4, in
    float64 before the cast, where large terms cancel) and 0 at the forbidden ids `cols`."""
    out.scatter_(-1, z[:, None], g[:, 3:4])
    out.scatter_(-1, x0[:, None], g[:, 4:5])
    if cols is not None:
        out.index_fill_(-1, cols, 0.0)
    return out


class _UniformIntegrand(torch.autograd.Function):
    """f for every position, a block of positions at a time; the backward writes d f / d logits
    from per-position coefficients (one pass over the logits) instead of keeping autograd's
    dozen (B, L, V) intermediates and their backward passes."""

    @staticmethod
    def forward(ctx, logits: Tensor, x0: Tensor, z: Tensor, alpha: Tensor, beta: Tensor,
                forbidden: Tensor | None) -> Tensor:
        V = logits.shape[-1]
        rows = logits.numel() // V
        want = ctx.needs_input_grad[0]
        f = torch.empty(rows, dtype=torch.float64, device=logits.device)
        coef = torch.empty(rows, 7, dtype=torch.float64, device=logits.device) if want else None
        lg_all = logits.reshape(-1, V)
        cols = forbidden_columns(forbidden)
        for r in _row_blocks(logits):
            f[r], c = uniform_rows(mask_forbidden(lg_all[r], cols), x0[r], z[r], alpha[r], beta[r], V, coefficients=want)
            if want:
                coef[r] = c
        if want:
            ctx.save_for_backward(logits, x0, z, coef, cols if cols is not None else torch.empty(0, dtype=torch.long))
            ctx.has_forbidden = cols is not None
        return f

    @staticmethod
    def backward(ctx, grad_f: Tensor):
        logits, x0, z, coef, cols = ctx.saved_tensors
        V = logits.shape[-1]
        wd = _work_dtype(logits)
        lg_all = logits.reshape(-1, V)
        grad = torch.empty_like(lg_all)
        g = (grad_f.to(torch.float64)[:, None] * coef[:, :5]).to(wd)  # (R, 5) upstream-scaled
        lse, log_ratio = coef[:, 5:6].to(wd), coef[:, 6:7].to(wd)
        direct = grad.dtype == wd  # else each block is worked in wd and copied into grad
        for r in _row_blocks(logits):
            # from the unmasked logits: forbidden columns get values here, and 0 at the end
            gr = grad[r] if direct else torch.empty(lg_all[r].shape, dtype=wd, device=grad.device)
            _logit_grad(lg_all[r], gr, lse[r], log_ratio[r], g[r], z[r], x0[r], cols if ctx.has_forbidden else None)
            if not direct:
                grad[r] = gr
        return grad.view_as(logits), None, None, None, None, None


def uniform_integrand(logits: Tensor, x0: Tensor, z: Tensor, alpha: Tensor, beta: Tensor,
                      forbidden: Tensor | None = None) -> Tensor:
    """Uniform-noise integrand f (B, L) float64 for logits (B, L, V), ids x0 and z = x_t
    (B, L), alpha and beta (B, 1) float64, `forbidden` (V,) bool ids or None. See
    UniformDiffusion.integrand for the formula; differentiable in the logits."""
    B, L = x0.shape
    per_row = lambda v: v.expand(B, L).reshape(-1, 1)  # (B, 1) -> (B*L, 1)
    f = _UniformIntegrand.apply(logits, x0.reshape(-1), z.reshape(-1), per_row(alpha),
                                per_row(beta), forbidden)
    return f.view(B, L)


# ----------------------------------------------------------------------------- fused head


def _head_rows(device: torch.device, vocab: int) -> int:
    """Positions per block of the fused head: ~2 M logits (8 MiB in float32) on a CPU, the
    block size that measured fastest (docs/notebook/2026-12-05-layers-performance.md); every
    position at once on an accelerator."""
    return max(1, (1 << 21) // vocab) if device.type == "cpu" else 1 << 30


def _head_loop(h: Tensor, W: Tensor, cols: Tensor | None, grad_h: bool, grad_W: bool,
               rows: Callable[[Tensor, slice, bool], Tensor]):
    """The fused head's loop over blocks of positions: f (N,) float64 and d(sum)/dh (N, D),
    d(sum)/dW (V, D) (None where not asked for), for h (N, D) features and W (V, D) head
    weights (logits h W^T; the forbidden ids `cols` at FORBIDDEN_LOGIT). `rows(lg, r, want)`
    returns f of positions r from their logits lg (n, V) and, with `want`, overwrites lg with
    the gradient of the weighted sum with respect to them."""
    N, V = h.shape[0], W.shape[0]
    wd = _work_dtype(h)
    hd, Wd = h.detach().to(wd), W.detach().to(wd)
    want = grad_h or grad_W
    f = torch.empty(N, dtype=torch.float64, device=h.device)
    gh = torch.empty_like(hd) if grad_h else None
    gW = torch.zeros_like(Wd) if grad_W else None
    R = max(1, min(N, _head_rows(h.device, V)))
    buf = torch.empty(R, V, dtype=wd, device=h.device)  # one block of logits, reused
    for r0 in range(0, N, R):
        r = slice(r0, min(N, r0 + R))
        lg = torch.mm(hd[r], Wd.t(), out=buf[: r.stop - r0])  # (n, V)
        if cols is not None:
            lg.index_fill_(-1, cols, FORBIDDEN_LOGIT)
        f[r] = rows(lg, r, want)
        if gh is not None:
            torch.mm(lg, Wd, out=gh[r])
        if gW is not None:
            gW.addmm_(lg.t(), hd[r])
    return f, gh, gW


def _head_blocks(h: Tensor, W: Tensor, x0: Tensor, z: Tensor, alpha: Tensor, beta: Tensor,
                 cols: Tensor | None, scale: Tensor, grad_h: bool, grad_W: bool):
    """The fused head and uniform integrand (_head_loop): f (N,) float64 and, with `scale`
    (N,) float64 the weights of the sum, d(sum scale f)/dh and /dW (None where not asked for)."""
    V = W.shape[0]

    def rows(lg: Tensor, r: slice, want: bool) -> Tensor:
        f = torch.empty(lg.shape[0], dtype=torch.float64, device=lg.device)
        for q in _row_blocks(lg):  # the integrand's own, cache-sized, sub-blocks
            rr = slice(r.start + q.start, r.start + q.stop)
            kept: list[Tensor] | None = [] if want else None
            f[q], c = uniform_rows(lg[q], x0[rr], z[rr], alpha[rr], beta[rr], V, coefficients=want, keep=kept)
            if kept is not None:  # the block's logits become its gradient in place
                _logit_grad_kept(lg[q], *kept, c, scale[rr], z[rr], x0[rr], cols)
        return f

    return _head_loop(h, W, cols, grad_h, grad_W, rows)


class _FusedHeadSum(torch.autograd.Function):
    """sum_i weight_i f_i with the logits h W^T formed a block of positions at a time and never
    kept: `blocks` (_head_blocks or _ce_blocks) works out the gradients in the forward too (the
    sum is linear in f with known weights, so the upstream gradient is one scalar), and the
    backward only scales them, so neither the (N, V) logits nor their gradient is ever in
    memory whole. Inputs (blocks, h, W, *rest, weights): `rest` goes to `blocks`
    unchanged, `weights` (N,) float64 last. Outputs (sum, f); f is not differentiable."""

    @staticmethod
    def forward(ctx, blocks: Callable, h: Tensor, W: Tensor, *rest):
        f, gh, gW = blocks(h, W, *rest, grad_h=ctx.needs_input_grad[1], grad_W=ctx.needs_input_grad[2])
        ctx.save_for_backward(*(g if g is not None else torch.empty(0) for g in (gh, gW)))
        ctx.dtypes = h.dtype, W.dtype
        ctx.mark_non_differentiable(f)
        return (rest[-1] * f).sum(), f

    @staticmethod
    def backward(ctx, grad_sum: Tensor, grad_f: Tensor | None):
        gh, gW = ctx.saved_tensors
        outs = []
        for need, g, dtype in zip(ctx.needs_input_grad[1:3], (gh, gW), ctx.dtypes):
            outs.append((g * grad_sum.to(g.dtype)).to(dtype) if need else None)
        return (None, *outs, *(None,) * (len(ctx.needs_input_grad) - 3))  # none for `rest`


def _fused_head_sum(blocks: Callable, h: Tensor, W: Tensor, *rest) -> tuple[Tensor, Tensor]:
    """(sum of weights * f, f) through _FusedHeadSum, or without autograd where no gradient is
    wanted (no_grad, or h and W need none); `rest` ends with the weights (N,) float64."""
    if torch.is_grad_enabled() and (h.requires_grad or W.requires_grad):
        return _FusedHeadSum.apply(blocks, h, W, *rest)
    f = blocks(h, W, *rest, grad_h=False, grad_W=False)[0]
    return (rest[-1] * f).sum(), f


def head_integrand(h: Tensor, W: Tensor, x0: Tensor, z: Tensor, alpha: Tensor, beta: Tensor,
                   scale: Tensor, forbidden: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """(sum of scale * f, f (B, L) float64) for the uniform-noise integrand of the logits
    h W^T, fused: the same values and gradients as uniform_integrand(h @ W.T, ...) weighted by
    `scale` (B, L) and summed, without the (B, L, V) logits in memory. h (B, L, D) features, W
    (V, D) tied head weights, the rest as for uniform_integrand. Differentiable in h and W."""
    B, L = x0.shape
    per_row = lambda v: v.expand(B, L).reshape(-1, 1)  # (B, 1) -> (B*L, 1)
    args = (h.reshape(B * L, h.shape[-1]), W, x0.reshape(-1), z.reshape(-1), per_row(alpha), per_row(beta),
            forbidden_columns(forbidden), scale.reshape(-1).to(torch.float64))
    total, f = _fused_head_sum(_head_blocks, *args)
    return total, f.view(B, L)


def _ce_blocks(h: Tensor, W: Tensor, target: Tensor, cols: Tensor | None, weight: Tensor,
               grad_h: bool, grad_W: bool):
    """The fused head and cross-entropy (_head_loop): -log x̂0(target) (N,) float64 and, with
    `weight` (N,) float64 the weights of the sum, d(sum weight nll)/dh and /dW (None where not
    asked for). A row's logits become weight (softmax - onehot(target)), and 0 at `cols`."""

    def rows(lg: Tensor, r: slice, want: bool) -> Tensor:
        lse = torch.logsumexp(lg, dim=-1, keepdim=True)  # (n, 1)
        tg = target[r, None]  # (n, 1)
        nll = (lse.to(torch.float64) - lg.gather(-1, tg).to(torch.float64))[:, 0]
        if want:
            g = lg.sub_(lse).exp_()  # softmax, in place of the logits
            g.scatter_add_(-1, tg, torch.full_like(lse, -1.0))
            g.mul_(weight[r, None].to(g.dtype))
            if cols is not None:
                g.index_fill_(-1, cols, 0.0)
        return nll

    return _head_loop(h, W, cols, grad_h, grad_W, rows)


def head_cross_entropy(h: Tensor, W: Tensor, target: Tensor, weight: Tensor,
                       forbidden: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """(sum of weight * nll, nll (N,) float64) for nll = -log softmax(h W^T)[target] with the
    `forbidden` (V,) bool ids at probability 0, fused as head_integrand is: the same values
    and gradients as the cross-entropy of the logits h @ W.T formed whole, without them in
    memory. h (N, D), W (V, D), target (N,) ids, weight (N,). Differentiable in h and W."""
    return _fused_head_sum(_ce_blocks, h, W, target, forbidden_columns(forbidden), weight.to(torch.float64))
