"""engine.kernels against the plain-autograd references in engine.reference: values and gradients of
the uniform integrand and of the fused head with either loss, for any block size, with and without
forbidden ids, in float64 to rounding and in float32 at a model's vocabulary (small shapes, fixed
seeds)."""

from __future__ import annotations

import math

import pytest
import torch

from engine import kernels
from engine.kernels import head_cross_entropy, head_integrand, uniform_integrand
from engine.reference import head_cross_entropy_reference, head_integrand_reference, uniform_integrand_reference
from engine.schedule import get_schedule

SCHEDULE = get_schedule("loglinear", 1e-3)


def _integrand_case(vocab: int, batch: int, length: int, dtype: torch.dtype, seed: int, forbid: bool = True):
    """Logits, ids (z == x0 at about half the positions, z sometimes a forbidden id), alpha and
    beta at times that include the ends of [0, 1], and forbidden ids {0, 3} (or None)."""
    g = torch.Generator().manual_seed(seed)
    x0 = torch.randint(4, vocab, (batch, length), generator=g)
    z = torch.where(torch.rand(batch, length, generator=g) < 0.5, x0, torch.randint(vocab, (batch, length), generator=g))
    t = torch.rand(batch, generator=g, dtype=torch.float64)
    t[:3] = torch.tensor([1e-4, 0.999, 1.0], dtype=torch.float64)[: min(3, batch)]
    alpha = SCHEDULE.alpha(t)[:, None]  # (B, 1)
    beta = -SCHEDULE.dalpha(t)[:, None] / alpha  # (B, 1)
    logits = (3 * torch.randn(batch, length, vocab, generator=g, dtype=torch.float64)).to(dtype)  # (B, L, V)
    forbidden = torch.zeros(vocab, dtype=torch.bool)
    forbidden[[0, 3]] = True
    return logits, x0, z, alpha, beta, forbidden if forbid else None


def _by_reference(logits: torch.Tensor, x0, z, alpha, beta, forbidden):
    """f and d(sum w f)/d logits through engine.reference (plain autograd), and the weights w."""
    leaf = logits.detach().clone().requires_grad_(True)
    f = uniform_integrand_reference(leaf, x0, z, alpha, beta, forbidden)
    weights = torch.linspace(0.5, 2.0, f.numel(), dtype=torch.float64)
    (f.reshape(-1) * weights).sum().backward()
    return f.detach(), leaf.grad, weights


# ----- uniform integrand -----------------------------------------------------------------------
@pytest.mark.parametrize("forbid", [True, False])
@pytest.mark.parametrize("chunk", [1, 7, 1 << 30])
def test_uniform_integrand_closed_form_gradient_equals_autograd(chunk: int, forbid: bool, monkeypatch) -> None:
    """The fused integrand's values and its closed-form gradient equal autograd through the
    formula, in float64, for any block size, with and without forbidden ids, z == x0 and
    z != x0, t ~ 0 and t = 1."""
    monkeypatch.setattr(kernels, "_row_chunk", lambda device, vocab: chunk)
    logits, x0, z, alpha, beta, forbidden = _integrand_case(11, 5, 40, torch.float64, seed=0, forbid=forbid)
    want_f, want_grad, weights = _by_reference(logits, x0, z, alpha, beta, forbidden)
    leaf = logits.clone().requires_grad_(True)
    f = uniform_integrand(leaf, x0, z, alpha, beta, forbidden)
    torch.testing.assert_close(f.detach(), want_f, rtol=1e-12, atol=1e-12)  # same formula, blocked
    (f.reshape(-1) * weights).sum().backward()
    torch.testing.assert_close(leaf.grad, want_grad, rtol=1e-9, atol=1e-12)
    if forbidden is not None:
        assert not leaf.grad[..., forbidden].any()  # forbidden ids get no gradient


def test_uniform_integrand_gradient_passes_gradcheck() -> None:
    """Finite differences agree with the closed-form backward (float64, small V)."""
    logits, x0, z, alpha, beta, forbidden = _integrand_case(6, 3, 4, torch.float64, seed=1)
    alpha, beta = alpha.clamp(max=1 - 1e-3), beta  # away from t ~ 0, where f is steep
    fn = lambda lg: uniform_integrand(lg, x0, z, alpha, beta, forbidden)
    assert torch.autograd.gradcheck(fn, (logits.clone().requires_grad_(True),), eps=1e-6, atol=1e-6, rtol=1e-5)


def test_uniform_integrand_float32_at_model_size() -> None:
    """float32 logits over a real vocabulary, times down to 1e-4, a third of the positions
    confident about x0 (x̂0(x0) from 0.9 to 1 - 1e-6, where delta needs the log-sum-exp over the
    other ids and x0's terms would swamp float32 row sums): values and gradient close to the
    float64 reference: f at every position; the gradient within 1e-3 of each position's
    largest entry, plus 1e-6 of the largest in its sequence (in rows already right to 1e-4 the
    entry at x0 is a second-order difference of float32 row sums, ~1e-9 here, and only its
    size next to the rest of the batch matters for training)."""
    logits, x0, z, alpha, beta, forbidden = _integrand_case(4096, 4, 64, torch.float32, seed=2)
    confident = torch.zeros(4, 64, dtype=torch.bool)
    confident[:, ::3] = True
    boost = torch.linspace(12.0, 24.0, int(confident.sum()))  # on top of 3 randn over 4,096 ids
    logits[confident] = logits[confident].scatter_add(-1, x0[confident][:, None], boost[:, None])
    want_f, want_grad, weights = _by_reference(logits.double(), x0, z, alpha, beta, forbidden)
    leaf = logits.clone().requires_grad_(True)
    f = uniform_integrand(leaf, x0, z, alpha, beta, forbidden)
    torch.testing.assert_close(f.detach(), want_f, rtol=1e-5, atol=1e-6)
    (f.reshape(-1) * weights).sum().backward()
    assert leaf.grad.dtype == torch.float32
    err = (leaf.grad.double() - want_grad).abs().amax(-1)  # (B, L)
    row = want_grad.abs().amax(-1)  # (B, L)
    assert (err <= 1e-3 * row + 1e-6 * row.amax(-1, keepdim=True)).all(), (err / row).max()
    assert (err[~confident] <= 1e-3 * row[~confident]).all()  # the rest: each row to 1e-3 of itself


# ----- fused head and uniform integrand --------------------------------------------------------
def _head_case(vocab: int, batch: int, length: int, dim: int, seed: int, forbid: bool = True):
    """Features h (B, L, D) and head weights W (V, D) whose logits h W^T are as wide as
    _integrand_case's, its ids, times and forbidden ids, and weights that are 0 at about a
    third of the positions (clean ones)."""
    _, x0, z, alpha, beta, forbidden = _integrand_case(vocab, batch, length, torch.float64, seed, forbid)
    g = torch.Generator().manual_seed(seed + 100)
    h = torch.randn(batch, length, dim, generator=g, dtype=torch.float64)  # (B, L, D)
    W = 3 * torch.randn(vocab, dim, generator=g, dtype=torch.float64) / math.sqrt(dim)  # (V, D)
    scale = torch.linspace(0.5, 2.0, batch * length, dtype=torch.float64).view(batch, length)
    scale = scale.masked_fill(torch.rand(batch, length, generator=g) < 1 / 3, 0.0)
    return h, W, x0, z, alpha, beta, forbidden, scale


@pytest.mark.parametrize("forbid", [True, False])
@pytest.mark.parametrize("rows,chunk", [(1, 1), (7, 3), (16, 1 << 30), (1 << 30, 5)])
def test_head_integrand_equals_the_reference(rows: int, chunk: int, forbid: bool, monkeypatch) -> None:
    """The fused head + integrand gives the weighted sum, f and the gradients in h and W of the
    reference (the logits h @ W.T formed whole, autograd) in float64, for any head block and
    integrand sub-block (blocks that do not divide the positions included), with and without
    forbidden ids; with no gradient asked for (no_grad, or inputs that do not require it) the
    same values; the clean positions (scale 0) pass no gradient."""
    monkeypatch.setattr(kernels, "_head_rows", lambda device, vocab: rows)
    monkeypatch.setattr(kernels, "_row_chunk", lambda device, vocab: chunk)
    h, W, x0, z, alpha, beta, forbidden, scale = _head_case(11, 5, 9, 6, seed=3, forbid=forbid)
    hr, Wr = h.clone().requires_grad_(True), W.clone().requires_grad_(True)
    want_total, want_f = head_integrand_reference(hr, Wr, x0, z, alpha, beta, scale, forbidden)
    want_total.backward()
    hf, Wf = h.clone().requires_grad_(True), W.clone().requires_grad_(True)
    total, f = head_integrand(hf, Wf, x0, z, alpha, beta, scale, forbidden)
    torch.testing.assert_close(f, want_f.detach(), rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(total, want_total.detach(), rtol=1e-12, atol=1e-12)
    assert not f.requires_grad and total.requires_grad
    (3.0 * total).backward()  # the upstream gradient scales what the forward worked out
    torch.testing.assert_close(hf.grad, 3.0 * hr.grad, rtol=1e-9, atol=1e-12)
    torch.testing.assert_close(Wf.grad, 3.0 * Wr.grad, rtol=1e-9, atol=1e-12)
    assert not hf.grad[scale == 0].any() and hf.grad[scale > 0].abs().amax(-1).min() > 0
    with torch.no_grad():
        total_ng, f_ng = head_integrand(hf, Wf, x0, z, alpha, beta, scale, forbidden)
    torch.testing.assert_close(f_ng, f)
    torch.testing.assert_close(total_ng, total.detach())
    total_leaf, _ = head_integrand(h, W, x0, z, alpha, beta, scale, forbidden)
    assert not total_leaf.requires_grad
    torch.testing.assert_close(total_leaf, total.detach())


def test_head_integrand_of_no_positions_is_zero() -> None:
    """Windows of length 0: a zero sum, an empty f, zero gradients, no error."""
    h, W = torch.zeros(2, 0, 4, requires_grad=True), torch.randn(9, 4, requires_grad=True)
    ids = torch.zeros(2, 0, dtype=torch.long)
    alpha, beta = torch.full((2, 1), 0.5, dtype=torch.float64), torch.ones(2, 1, dtype=torch.float64)
    total, f = head_integrand(h, W, ids, ids, alpha, beta, torch.zeros(2, 0, dtype=torch.float64))
    total.backward()
    assert float(total.detach()) == 0.0 and f.shape == (2, 0) and not W.grad.any()


def test_head_integrand_gradient_matches_finite_differences() -> None:
    """Central differences of the weighted sum agree with the gradients the fused forward works
    out, at every entry of h and of W (float64, small V)."""
    h, W, x0, z, alpha, beta, forbidden, scale = _head_case(7, 3, 4, 3, seed=4)
    alpha = alpha.clamp(max=1 - 1e-3)  # away from t ~ 0, where f is steep
    total = lambda hh, WW: float(head_integrand(hh, WW, x0, z, alpha, beta, scale, forbidden)[0])
    hg, Wg = h.clone().requires_grad_(True), W.clone().requires_grad_(True)
    head_integrand(hg, Wg, x0, z, alpha, beta, scale, forbidden)[0].backward()
    eps = 1e-6
    for x, grad, other in ((h, hg.grad, lambda v: total(v, W)), (W, Wg.grad, lambda v: total(h, v))):
        numeric = torch.empty_like(x)
        for i in range(x.numel()):
            up, down = x.clone(), x.clone()
            up.view(-1)[i] += eps
            down.view(-1)[i] -= eps
            numeric.view(-1)[i] = (other(up) - other(down)) / (2 * eps)
        torch.testing.assert_close(grad, numeric, rtol=1e-5, atol=1e-5 * float(numeric.abs().max()))


def test_head_integrand_float32_at_model_size() -> None:
    """float32 features and head weights over a real vocabulary, times down to 1e-4, a third of
    the positions confident about x0: f, dL/dh and dL/dW close to the float64 reference (the
    fused gradient takes x̂0 from exp(s), whose float32 rounding grows with log(V alpha / A),
    up to ~78 at t ~ 0)."""
    vocab, B, L, dim = 4096, 4, 64, 32
    _, x0, z, alpha, beta, forbidden = _integrand_case(vocab, B, L, torch.float32, seed=5)
    g = torch.Generator().manual_seed(6)
    h = torch.randn(B, L, dim, generator=g)
    W = 2 * torch.randn(vocab, dim, generator=g) / math.sqrt(dim)
    confident = torch.zeros(B, L, dtype=torch.bool)
    confident[:, ::3] = True
    h[confident] += 3.0 * W[x0[confident]]  # x̂0(x0) close to 1 there
    scale = torch.linspace(0.5, 2.0, B * L, dtype=torch.float64).view(B, L)
    hr, Wr = h.double().requires_grad_(True), W.double().requires_grad_(True)
    want_total, want_f = head_integrand_reference(hr, Wr, x0, z, alpha, beta, scale, forbidden)
    want_total.backward()
    hf, Wf = h.clone().requires_grad_(True), W.clone().requires_grad_(True)
    total, f = head_integrand(hf, Wf, x0, z, alpha, beta, scale, forbidden)
    total.backward()
    assert hf.grad.dtype == Wf.grad.dtype == torch.float32
    torch.testing.assert_close(f, want_f.detach(), rtol=1e-5, atol=1e-6)
    for got, want in ((hf.grad, hr.grad), (Wf.grad, Wr.grad)):
        err = (got.double() - want).abs().amax(-1)  # per row of h or W
        assert (err <= 1e-3 * want.abs().amax(-1) + 1e-6 * want.abs().max()).all(), float(err.max())
        assert float((got.double() - want).norm() / want.norm()) < 1e-4


# ----- fused head and cross-entropy ------------------------------------------------------------
@pytest.mark.parametrize("forbid", [True, False])
@pytest.mark.parametrize("rows", [1, 4, 1 << 30])
def test_head_cross_entropy_equals_the_reference(rows: int, forbid: bool, monkeypatch) -> None:
    """The fused head + cross-entropy gives the weighted sum, the per-row -log x̂0(target) and
    the gradients in h and W of the reference (the logits h @ W.T formed whole, forbidden ids at
    probability 0, autograd) in float64, for any block size, with and without forbidden ids;
    rows of weight 0 pass no gradient, the forbidden rows of W get none; no_grad and leaves that
    need no gradient give the same values; no rows at all give a zero sum."""
    monkeypatch.setattr(kernels, "_head_rows", lambda device, vocab: rows)
    g = torch.Generator().manual_seed(7)
    N, V, D = 13, 11, 5
    h, W = torch.randn(N, D, generator=g, dtype=torch.float64), torch.randn(V, D, generator=g, dtype=torch.float64)
    forbidden = torch.zeros(V, dtype=torch.bool)
    forbidden[[0, 4]] = True
    target = torch.randint(5, V, (N,), generator=g)
    weight = torch.linspace(0.5, 3.0, N, dtype=torch.float64).masked_fill(torch.arange(N) % 4 == 1, 0.0)
    forbidden = forbidden if forbid else None
    hr, Wr = h.clone().requires_grad_(True), W.clone().requires_grad_(True)
    want_total, want_nll = head_cross_entropy_reference(hr, Wr, target, weight, forbidden)
    want_total.backward()
    hf, Wf = h.clone().requires_grad_(True), W.clone().requires_grad_(True)
    total, nll = head_cross_entropy(hf, Wf, target, weight, forbidden)
    torch.testing.assert_close(nll, want_nll.detach(), rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(total, want_total.detach(), rtol=1e-12, atol=1e-12)
    assert not nll.requires_grad and total.requires_grad
    (2.0 * total).backward()
    torch.testing.assert_close(hf.grad, 2.0 * hr.grad, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(Wf.grad, 2.0 * Wr.grad, rtol=1e-10, atol=1e-12)
    assert not hf.grad[weight == 0].any() and hf.grad[weight > 0].abs().amax(-1).min() > 0
    if forbidden is not None:
        assert not Wf.grad[forbidden].any() and Wf.grad[~forbidden].abs().amax(-1).min() > 0
    with torch.no_grad():
        total_ng, nll_ng = head_cross_entropy(hf, Wf, target, weight, forbidden)
    torch.testing.assert_close(nll_ng, nll)
    torch.testing.assert_close(total_ng, total.detach())
    total_leaf, _ = head_cross_entropy(h, W, target, weight, forbidden)
    assert not total_leaf.requires_grad
    torch.testing.assert_close(total_leaf, total.detach())
    empty = torch.zeros(0, D, dtype=torch.float64, requires_grad=True)
    total0, nll0 = head_cross_entropy(empty, Wf, target[:0], weight[:0], forbidden)
    total0.backward()
    assert float(total0.detach()) == 0.0 and nll0.shape == (0,)


def test_head_cross_entropy_float32_against_the_float64_reference() -> None:
    """float32 features and weights over a real vocabulary: nll, dL/dh and dL/dW close to the
    reference computed in float64, and the gradients in float32."""
    g = torch.Generator().manual_seed(8)
    N, V, D = 96, 4096, 32
    h, W = torch.randn(N, D, generator=g), 2 * torch.randn(V, D, generator=g) / math.sqrt(D)
    forbidden = torch.zeros(V, dtype=torch.bool)
    forbidden[:3] = True
    target = torch.randint(3, V, (N,), generator=g)
    weight = torch.linspace(0.5, 3.0, N, dtype=torch.float64)
    hr, Wr = h.double().requires_grad_(True), W.double().requires_grad_(True)
    want_total, want_nll = head_cross_entropy_reference(hr, Wr, target, weight, forbidden)
    want_total.backward()
    hf, Wf = h.clone().requires_grad_(True), W.clone().requires_grad_(True)
    total, nll = head_cross_entropy(hf, Wf, target, weight, forbidden)
    total.backward()
    assert hf.grad.dtype == Wf.grad.dtype == torch.float32
    torch.testing.assert_close(nll, want_nll.detach(), rtol=1e-5, atol=1e-5)
    for got, want in ((hf.grad, hr.grad), (Wf.grad, Wr.grad)):
        assert float((got.double() - want).norm() / want.norm()) < 1e-5
