"""engine.diffusion: the mathematics pinned down (MODEL.md, "Tests that pin the mathematics down").

Most checks use a *per-token* fake denoiser (x̂0 at a position depends only on the token there
and on t) over a tiny vocabulary, so that expectations over x_t can be computed exactly by
enumerating the V values of x_t: no Monte Carlo noise where a limit is being checked.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

import engine.diffusion as diffusion_module
from engine.clean_mask import random_clean_mask
from engine.config import DiffusionConfig
from engine.diffusion import AbsorbingDiffusion, Diffusion, UniformDiffusion, make_diffusion, tied_head_weight
from engine.kernels import FORBIDDEN_LOGIT

V = 5
MASK = V - 1  # the absorbing noise's mask id (forbidden in x̂0)
NOISES = ["uniform", "absorbing"]
SCHEDULES = ["loglinear", "cosine"]


def make(noise: str, schedule: str = "loglinear", eps: float = 1e-3, t_min: float = 0.0, vocab: int = V) -> Diffusion:
    mask = vocab - 1 if noise == "absorbing" else None
    return make_diffusion(DiffusionConfig(noise=noise, schedule=schedule, eps=eps, t_min=t_min), vocab, mask)


class PerToken:
    """logits[b, l] = W[x_t[b, l]] + t[b] * u: a fixed, smooth-in-t denoiser (float64)."""

    def __init__(self, seed: int = 0, scale: float = 1.0, vocab: int = V) -> None:
        g = torch.Generator().manual_seed(seed)
        self.W = scale * torch.randn(vocab, vocab, generator=g, dtype=torch.float64)
        self.u = torch.randn(vocab, generator=g, dtype=torch.float64)

    def __call__(self, x_t: torch.Tensor, t: torch.Tensor, clean: torch.Tensor | None) -> torch.Tensor:
        return self.W[x_t] + t.to(torch.float64)[:, None, None] * self.u  # (B, L, V)


def q_marginal(d: Diffusion, x0: int, z: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """q(x_t = z | x0) elementwise, float64."""
    a = d.schedule.alpha(t.to(torch.float64))
    if isinstance(d, UniformDiffusion):
        return a * (z == x0) + (1 - a) / d.vocab_size
    return a * (z == x0) + (1 - a) * (z == d.mask_id)


def exact_mean(d: Diffusion, fn, x0: int, t: torch.Tensor, s: torch.Tensor | None = None, model=None) -> torch.Tensor:
    """(N,) E_{x_t ~ q(.|x0)} fn(x0, x_t, logits, t[, s]) at each of the N times, by enumeration."""
    model = model or PerToken()
    n, vocab = t.shape[0], d.vocab_size
    z = torch.arange(vocab).repeat(n)  # (N V,)
    tt = t.repeat_interleave(vocab)
    x0s = torch.full_like(z, x0)
    logits = model(z[:, None], tt, None)
    args = (x0s[:, None], z[:, None], logits, tt) + (() if s is None else (s.repeat_interleave(vocab),))
    val = fn(*args)[:, 0]
    q = q_marginal(d, x0, z, tt)
    val = torch.where(q > 0, val, torch.zeros_like(val))  # unreachable x_t contribute nothing
    return (q * val).reshape(n, vocab).sum(1)


def continuous_exact(d: Diffusion, x0: int, lo: float = 0.0, model=None) -> float:
    """integral_lo^1 E f(t) dt by composite Gauss-Legendre (16 nodes a panel). The panels are
    geometric near t = 0, where the uniform-noise integrand has a log(1/t) singularity; below
    t = 1e-12 (where 1 - alpha underflows) the integral, O(1e-11), is left out."""
    nodes, weights = np.polynomial.legendre.leggauss(16)
    lo = max(lo, 1e-12)
    edges = np.unique(np.concatenate([np.geomspace(lo, 0.1, 60), np.linspace(0.1, 1.0, 150)]))
    edges = edges[edges >= lo]
    ts = np.concatenate([(b - a) / 2 * nodes + (a + b) / 2 for a, b in zip(edges[:-1], edges[1:])])
    ws = np.concatenate([(b - a) / 2 * weights for a, b in zip(edges[:-1], edges[1:])])
    f = exact_mean(d, d.integrand, x0, torch.tensor(ts), model=model)
    return float((f * torch.tensor(ws)).sum())


def discrete_exact(d: Diffusion, x0: int, T: int, model=None) -> float:
    """sum_{i=1}^T E KL(q(x_{s}|x_t, x0) || p(x_s|x_t)), t = i/T, s = (i-1)/T, by enumeration."""
    t = torch.arange(1, T + 1, dtype=torch.float64) / T
    s = torch.arange(0, T, dtype=torch.float64) / T
    return float(exact_mean(d, d.step_kl, x0, t, s, model=model).sum())


# ----- continuous vs discrete ------------------------------------------------------------------
@pytest.mark.parametrize("schedule", SCHEDULES)
@pytest.mark.parametrize("noise", NOISES)
def test_continuous_nelbo_is_the_limit_of_the_discrete_one(noise: str, schedule: str) -> None:
    d = make(noise, schedule)
    for x0 in (0, 2):
        cont = continuous_exact(d, x0)
        gaps = [abs(discrete_exact(d, x0, T) - cont) for T in (10, 100, 1000)]
        assert cont > 0.1
        # first-order convergence: the gap shrinks about tenfold per tenfold T
        assert gaps[1] < gaps[0] / 5 and gaps[2] < gaps[1] / 5, gaps
        assert gaps[2] < 2e-3 * cont, gaps


def test_uniform_integrand_matches_the_udlm_vector_formula() -> None:
    """The regrouped closed form equals UDLM's integrand written with full vectors:
    f = beta/V [ sum_{j != z} r_j log(r_j / ρ_j) + V / xbarθ_z - V / xbar_z ]."""
    vocab = 7
    d = make("uniform", vocab=vocab)
    g = torch.Generator().manual_seed(3)
    n = 400
    x0 = torch.randint(vocab, (n, 1), generator=g)
    z = torch.where(torch.rand(n, 1, generator=g) < 0.5, x0, torch.randint(vocab, (n, 1), generator=g))
    t = torch.cat([torch.rand(n - 4, generator=g, dtype=torch.float64), torch.tensor([1e-4, 1e-3, 0.999, 1.0], dtype=torch.float64)])
    logits = 3 * torch.randn(n, 1, vocab, generator=g, dtype=torch.float64)
    got = d.integrand(x0, z, logits, t)[:, 0]

    a = d.schedule.alpha(t)[:, None]
    beta = -d.schedule.dalpha(t)[:, None] / a
    p = torch.softmax(logits[:, 0], -1)
    xbar = vocab * a * nn.functional.one_hot(x0[:, 0], vocab) + (1 - a)
    xbar_th = vocab * a * p + (1 - a)
    r = xbar / xbar.gather(1, z)
    rho = xbar_th / xbar_th.gather(1, z)
    off = ~nn.functional.one_hot(z[:, 0], vocab).bool()
    kl = (r * torch.log(r / rho) * off).sum(1)
    want = beta[:, 0] / vocab * (kl + vocab / xbar_th.gather(1, z)[:, 0] - vocab / xbar.gather(1, z)[:, 0])
    torch.testing.assert_close(got, want, rtol=1e-8, atol=1e-10)


# ----- the loss with a tied head: the fused kernels (engine.kernels) --------------------------
@pytest.mark.parametrize("noise", ["uniform", "absorbing"])
def test_the_loss_fuses_the_head_of_a_tied_head_denoiser(noise: str) -> None:
    """The loss of either noise on an SFDLM and a transformer denoiser takes the fused path (the
    full logits are never formed: head() is not called) and gives the loss and parameter
    gradients of the unfused path (the same model behind a plain callable) to float32
    rounding; a plain callable has no tied head and keeps the unfused path."""
    from engine.build import build_model
    from engine.config import ModelConfig

    vocab, B, L = 97, 3, 20
    d = make_diffusion(DiffusionConfig(noise=noise, t_min=1e-3), vocab, mask_id=1, forbidden_ids=range(3))
    x0 = torch.randint(3, vocab, (B, L), generator=torch.Generator().manual_seed(0))
    clean = random_clean_mask(B, L, torch.Generator().manual_seed(1), p=1.0)
    assert clean.any() and not clean.all()
    for arch in ("sfdlm", "transformer"):
        torch.manual_seed(0)
        model = build_model(ModelConfig(vocab_size=vocab, d_model=32, n_layers=2, d_state=8,
                                        fourier_blocks=4, arch=arch))
        assert tied_head_weight(model) is model.embed.weight
        plain = lambda x_t, t, c: model(x_t, t, c)
        assert tied_head_weight(plain) is None
        results = []
        for net in (plain, model):
            calls = []
            head = model.head
            model.head = lambda hh, head=head, calls=calls: calls.append(1) or head(hh)
            try:
                out = d.loss(net, x0, clean, torch.Generator().manual_seed(2))
                model.zero_grad(set_to_none=True)
                out.loss.backward()
            finally:
                del model.head
            results.append((out, {n: p.grad.clone() for n, p in model.named_parameters()}, len(calls)))
        (want, want_grads, plain_calls), (got, grads, fused_calls) = results
        assert plain_calls == 1 and fused_calls == 0, arch
        assert got.n_tokens == want.n_tokens == int((~clean).sum())
        torch.testing.assert_close(got.loss, want.loss, rtol=1e-5, atol=0)
        torch.testing.assert_close(got.nelbo_sum, want.nelbo_sum, rtol=1e-5, atol=0)
        for name, g in want_grads.items():
            torch.testing.assert_close(grads[name], g, rtol=1e-4, atol=1e-5 * float(g.abs().max()) + 1e-12,
                                       msg=lambda m, name=name: f"{arch} {name}: {m}")


def test_absorbing_loss_forms_the_logits_of_the_masked_positions_only(monkeypatch) -> None:
    """The absorbing loss of a tied-head denoiser hands the fused cross-entropy the features of
    the masked, non-clean positions and no others (the rest have a zero integrand), with the
    weight -alpha'/(1 - alpha) (1 - t_min) of their sequence's time."""
    from engine.build import build_model
    from engine.config import ModelConfig

    vocab, B, L, m = 61, 4, 24, 1
    d = make_diffusion(DiffusionConfig(noise="absorbing", t_min=1e-3), vocab, mask_id=m, forbidden_ids=range(3))
    torch.manual_seed(0)
    model = build_model(ModelConfig(vocab_size=vocab, d_model=16, n_layers=2, d_state=4, fourier_blocks=4))
    x0 = torch.randint(3, vocab, (B, L), generator=torch.Generator().manual_seed(0))
    clean = random_clean_mask(B, L, torch.Generator().manual_seed(1), p=1.0)
    seen = {}
    real = diffusion_module.head_cross_entropy

    def spy(h, W, target, weight, forbidden=None):
        seen.update(rows=h.shape[0], target=target.clone(), weight=weight.clone())
        return real(h, W, target, weight, forbidden)

    monkeypatch.setattr(diffusion_module, "head_cross_entropy", spy)
    gen = torch.Generator().manual_seed(2)
    out = d.loss(model, x0, clean, gen)
    gen = torch.Generator().manual_seed(2)  # the same draws again: the times and x_t of the loss
    t = d.sample_times(B, gen)
    x_t = d.corrupt(x0, t, gen, clean)
    masked = (x_t == m) & ~clean
    assert 0 < int(masked.sum()) < B * L and not (masked & clean).any()
    assert seen["rows"] == int(masked.sum())
    assert torch.equal(seen["target"], x0[masked])
    w = -d.schedule.dalpha(t.double()) / (1 - d.schedule.alpha(t.double()))
    torch.testing.assert_close(seen["weight"], (w[:, None].expand(B, L)[masked]) * (1 - 1e-3))
    assert out.n_tokens == int((~clean).sum()) and torch.isfinite(out.loss)


# ----- oracle and uniform denoisers ------------------------------------------------------------
def oracle(x0: torch.Tensor):
    def model(x_t: torch.Tensor, t: torch.Tensor, clean: torch.Tensor) -> torch.Tensor:
        return torch.where(nn.functional.one_hot(x0, V).bool(), 0.0, FORBIDDEN_LOGIT).to(torch.float32)  # (B, L, V)

    return model


@pytest.mark.parametrize("noise", NOISES)
def test_oracle_denoiser_has_zero_nelbo_but_the_prior_term(noise: str) -> None:
    """Every KL term, reconstruction included, is 0 for x̂0 = onehot(x0); what remains is the
    constant KL(q(x_1|x0) || p(x_1)), which is O(eps)."""
    d = make(noise, t_min=1e-3)
    g = torch.Generator().manual_seed(0)
    x0 = torch.randint(V - 1, (64, 12), generator=g)
    out = d.loss(oracle(x0), x0, None, g, reconstruction=True)
    assert out.n_tokens == 64 * 12
    assert abs(float(out.diffusion_sum)) / out.n_tokens < 1e-5
    assert float(out.recon_sum) == pytest.approx(0.0, abs=1e-9)
    assert float(out.prior_sum) == pytest.approx(d.prior_kl() * out.n_tokens)
    assert 0 < d.prior_kl() < 1e-2
    assert float(out.loss) == pytest.approx(d.prior_kl(), abs=1e-5)
    disc = d.nelbo_discrete(oracle(x0), x0, None, 8, g)
    assert abs(float(disc.diffusion_sum + disc.recon_sum)) < 1e-6 * disc.n_tokens


@pytest.mark.parametrize("noise", NOISES)
def test_uniform_denoiser_nelbo_is_L_log_V(noise: str) -> None:
    """x̂0 = uniform over the allowed ids (V of them for uniform noise, V - 1 for absorbing, whose
    mask id is forbidden). With all terms included (diffusion + reconstruction + prior) the NELBO
    per token is then >= log n_allowed, and in fact equal: the reverse chain is the exact reversal
    of the forward chain for uniformly distributed data, so the bound is tight."""
    d = make(noise, t_min=1e-3)
    flat = PerToken(scale=0.0)
    flat.u = torch.zeros(V, dtype=torch.float64)
    n_allowed = V if noise == "uniform" else V - 1
    for x0 in (0, 3):
        exact = continuous_exact(d, x0, model=flat) + d.prior_kl()
        assert exact == pytest.approx(math.log(n_allowed), rel=1e-6)
        disc = discrete_exact(d, x0, 10, model=flat) + d.prior_kl()
        assert disc == pytest.approx(math.log(n_allowed), rel=1e-9)
    # the Monte Carlo loss of a batch of L tokens: nelbo_sum >= L log n_allowed (statistically)
    x0 = torch.randint(V - 1, (512, 8), generator=torch.Generator().manual_seed(1))
    per_call = [float(d.loss(flat, x0, None, torch.Generator().manual_seed(i), reconstruction=True).nelbo_sum) for i in range(10)]
    mean, se = np.mean(per_call), np.std(per_call) / math.sqrt(len(per_call))
    assert mean >= x0.numel() * math.log(n_allowed) - 4 * se - 1e-6
    assert mean == pytest.approx(x0.numel() * math.log(n_allowed), abs=4 * se + 1e-3 * mean)


@pytest.mark.parametrize("noise", NOISES)
def test_any_denoiser_averaged_over_uniform_data_pays_at_least_log_V(noise: str) -> None:
    """Averaged over x0 uniform on the allowed ids, NELBO >= cross-entropy >= log n_allowed."""
    d = make(noise)
    n_allowed = V if noise == "uniform" else V - 1
    for seed in range(3):
        model = PerToken(seed=seed, scale=2.0)
        per_x0 = [continuous_exact(d, x0, model=model) + d.prior_kl() for x0 in range(n_allowed)]
        assert np.mean(per_x0) >= math.log(n_allowed)


@pytest.mark.parametrize("noise", NOISES)
def test_monte_carlo_estimators_are_unbiased(noise: str) -> None:
    """loss() (random t, random x_t) and nelbo_discrete() average to the exact values."""
    t_min = 1e-3
    d = make(noise, t_min=t_min)
    model = PerToken(seed=1)
    x0 = torch.randint(V - 1, (2048, 4), generator=torch.Generator().manual_seed(5))
    counts = torch.bincount(x0.flatten(), minlength=V).double() / x0.numel()
    want_cont = sum(float(counts[v]) * (continuous_exact(d, v, lo=t_min, model=model) + d.prior_kl()) for v in range(V - 1))
    got = [float(d.loss(model, x0, None, torch.Generator().manual_seed(i)).loss) for i in range(30)]
    se = np.std(got) / math.sqrt(len(got))
    assert abs(np.mean(got) - want_cont) < 4 * se + 1e-3, (np.mean(got), want_cont, se)

    T = 12
    want_disc = sum(float(counts[v]) * (discrete_exact(d, v, T, model=model) + d.prior_kl()) for v in range(V - 1))
    got_d = [float(d.nelbo_discrete(model, x0, None, T, torch.Generator().manual_seed(i)).loss) for i in range(5)]
    se_d = np.std(got_d) / math.sqrt(len(got_d))
    assert abs(np.mean(got_d) - want_disc) < 4 * se_d + 5e-3, (np.mean(got_d), want_disc, se_d)


# ----- forward corruption ----------------------------------------------------------------------
@pytest.mark.parametrize("noise", NOISES)
@pytest.mark.parametrize("t", [0.1, 0.5, 0.9])
def test_corruption_marginals(noise: str, t: float) -> None:
    d = make(noise, "cosine")
    B, L = 400, 500
    x0 = torch.randint(V - 1, (B, L), generator=torch.Generator().manual_seed(0))
    x_t = d.corrupt(x0, torch.full((B,), t), torch.Generator().manual_seed(1))
    n = B * L
    alpha = float(d.schedule.alpha(t))

    def check(count: int, p: float) -> None:
        assert abs(count - n * p) < 5 * math.sqrt(n * p * (1 - p)) + 1, (count, n * p)

    if noise == "uniform":
        check(int((x_t == x0).sum()), alpha + (1 - alpha) / V)
        # a changed token is uniform over the other V - 1 ids: x0 + k mod V, each k w.p. (1-alpha)/V
        check(int(((x_t - x0) % V == 1).sum()), (1 - alpha) / V)
    else:
        check(int((x_t == x0).sum()), alpha)
        check(int((x_t == MASK).sum()), 1 - alpha)
        assert bool(((x_t == x0) | (x_t == MASK)).all())


@pytest.mark.parametrize("noise", NOISES)
def test_corruption_is_seeded_and_endpoints(noise: str) -> None:
    d = make(noise)
    x0 = torch.randint(V - 1, (8, 64), generator=torch.Generator().manual_seed(0))
    t = torch.full((8,), 0.5)
    a = d.corrupt(x0, t, torch.Generator().manual_seed(7))
    b = d.corrupt(x0, t, torch.Generator().manual_seed(7))
    c = d.corrupt(x0, t, torch.Generator().manual_seed(8))
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert torch.equal(d.corrupt(x0, torch.zeros(8), torch.Generator().manual_seed(1)), x0)
    prior = d.prior((8, 64), torch.Generator().manual_seed(0))
    assert prior.shape == (8, 64) and prior.dtype == torch.long
    if noise == "absorbing":
        assert bool((prior == MASK).all())
    else:
        assert torch.equal(prior, d.prior((8, 64), torch.Generator().manual_seed(0)))
        assert set(prior.unique().tolist()) == set(range(V))


# ----- clean positions -------------------------------------------------------------------------
@pytest.mark.parametrize("noise", NOISES)
def test_clean_positions_never_corrupted_and_excluded_from_loss(noise: str) -> None:
    d = make(noise, t_min=1e-3)
    B, L = 16, 24
    x0 = torch.randint(V - 1, (B, L), generator=torch.Generator().manual_seed(0))
    clean = random_clean_mask(B, L, torch.Generator().manual_seed(1), p=1.0)
    assert clean.any() and (~clean).any()
    for i in range(5):
        x_t = d.corrupt(x0, torch.full((B,), 0.99), torch.Generator().manual_seed(i), clean)
        assert torch.equal(x_t[clean], x0[clean])
    base = PerToken(seed=2)
    seen: list[torch.Tensor] = []

    def model(x_t: torch.Tensor, t: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        seen.append(c.clone())
        assert torch.equal(x_t[c], x0[c])
        return base(x_t, t, c)

    def scrambled(x_t: torch.Tensor, t: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        noise = 50 * torch.randn(x_t.shape + (V,), generator=torch.Generator().manual_seed(9), dtype=torch.float64)
        return base(x_t, t, c) + noise * c[..., None]  # different logits at clean positions only

    for recon in (False, True):
        a = d.loss(model, x0, clean, torch.Generator().manual_seed(3), reconstruction=recon)
        b = d.loss(scrambled, x0, clean, torch.Generator().manual_seed(3), reconstruction=recon)
        assert a.n_tokens == int((~clean).sum())
        torch.testing.assert_close(a.loss, b.loss, rtol=1e-12, atol=0)
    assert all(torch.equal(c, clean) for c in seen)
    da = d.nelbo_discrete(model, x0, clean, 4, torch.Generator().manual_seed(4))
    db = d.nelbo_discrete(scrambled, x0, clean, 4, torch.Generator().manual_seed(4))
    torch.testing.assert_close(da.loss, db.loss, rtol=1e-12, atol=0)


# ----- posterior -------------------------------------------------------------------------------
def brute_posterior(d: Diffusion, z: int, x0_probs: torch.Tensor, t: float, s: float) -> torch.Tensor:
    """p(x_s | x_t = z) by Bayes' rule over explicit transition matrices, summing over x0 ~ x̂0."""
    vocab = d.vocab_size
    a_t, a_s = float(d.schedule.alpha(t)), float(d.schedule.alpha(s))
    a_ts = a_t / a_s
    eye = torch.eye(vocab, dtype=torch.float64)
    if isinstance(d, UniformDiffusion):
        target = torch.full((vocab, vocab), 1.0 / vocab, dtype=torch.float64)
    else:
        target = torch.zeros(vocab, vocab, dtype=torch.float64)
        target[:, d.mask_id] = 1.0
    Q_s = a_s * eye + (1 - a_s) * target  # rows x0 -> x_s
    Q_ts = a_ts * eye + (1 - a_ts) * target  # rows x_s -> x_t
    Q_t = a_t * eye + (1 - a_t) * target
    torch.testing.assert_close(Q_s @ Q_ts, Q_t)  # the schedule composes
    joint = torch.zeros(vocab, dtype=torch.float64)  # over x_s
    for x0 in range(vocab):
        for xs in range(vocab):
            joint[xs] += x0_probs[x0] * Q_s[x0, xs] * Q_ts[xs, z]
    return joint / joint.sum()


@pytest.mark.parametrize("noise", NOISES)
def test_posterior_equals_brute_force(noise: str) -> None:
    vocab = 4
    d = make(noise, "cosine", vocab=vocab)
    g = torch.Generator().manual_seed(0)
    for t, s in [(0.9, 0.3), (0.5, 0.45), (0.2, 0.0), (1.0, 0.5)]:
        probs = torch.softmax(2 * torch.randn(vocab, vocab, generator=g, dtype=torch.float64), -1)  # one x̂0 per z
        z = torch.arange(vocab)
        got = d.posterior(z[None], probs[None], torch.tensor([t], dtype=torch.float64), torch.tensor([s], dtype=torch.float64))[0]  # (V, V)
        torch.testing.assert_close(got.sum(-1), torch.ones(vocab, dtype=torch.float64))
        assert bool((got >= 0).all())
        for zi in range(vocab):
            torch.testing.assert_close(got[zi], brute_posterior(d, zi, probs[zi], t, s), rtol=1e-10, atol=1e-12)


# ----- forbidden ids, construction -------------------------------------------------------------
def test_forbidden_ids_get_no_mass() -> None:
    d = make_diffusion(DiffusionConfig(noise="uniform"), V, mask_id=MASK, forbidden_ids=[0])
    logits = torch.randn(3, 4, V, generator=torch.Generator().manual_seed(0)) * 20
    logits[..., MASK] = 1e4
    p = torch.exp(d.x0_log_probs(logits))
    assert bool((p[..., MASK] == 0).all()) and bool((p[..., 0] == 0).all())
    torch.testing.assert_close(p.sum(-1), torch.ones(3, 4))
    a = make("absorbing")
    assert isinstance(a, AbsorbingDiffusion) and bool(a.forbidden[MASK]) and a.n_allowed == V - 1
    assert isinstance(make("uniform"), UniformDiffusion) and isinstance(a, Diffusion)


def test_make_diffusion_rejects_bad_arguments() -> None:
    with pytest.raises(ValueError, match="mask_id"):
        make_diffusion(DiffusionConfig(noise="absorbing"), V, None)
    with pytest.raises(ValueError, match="outside the vocabulary"):
        make_diffusion(DiffusionConfig(), V, mask_id=V)
    with pytest.raises(ValueError, match="unknown noise"):
        make_diffusion(DiffusionConfig(noise="gaussian"), V)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="T must be"):
        make("uniform").nelbo_discrete(PerToken(), torch.zeros(1, 1, dtype=torch.long), None, 0, torch.Generator())


# ----- learning --------------------------------------------------------------------------------
class TinyDenoiser(nn.Module):
    """Embedding + position + time, flattened through an MLP: enough to memorise one batch."""

    def __init__(self, vocab: int, length: int, width: int = 32) -> None:
        super().__init__()
        self.tok = nn.Embedding(vocab, width)
        self.pos = nn.Parameter(torch.zeros(length, width))
        self.clean = nn.Embedding(2, width)
        self.time = nn.Linear(1, width)
        self.mlp = nn.Sequential(nn.Linear(length * width, 256), nn.GELU(), nn.Linear(256, length * vocab))
        self.vocab, self.length = vocab, length

    def forward(self, x_t: torch.Tensor, t: torch.Tensor, clean: torch.Tensor) -> torch.Tensor:
        h = self.tok(x_t) + self.pos + self.clean(clean.long()) + self.time(t[:, None, None])  # (B, L, D)
        return self.mlp(h.flatten(1)).view(x_t.shape[0], self.length, self.vocab)  # (B, L, V)


@pytest.mark.parametrize("noise", NOISES)
def test_loss_is_differentiable_and_a_tiny_model_overfits(noise: str) -> None:
    torch.manual_seed(0)
    vocab, L = 11, 8
    d = make(noise, vocab=vocab, t_min=1e-3)
    x0 = torch.randint(vocab - 1, (4, L), generator=torch.Generator().manual_seed(0)).repeat(8, 1)  # (32, L)
    clean = random_clean_mask(32, L, torch.Generator().manual_seed(1), p=0.5)
    model = TinyDenoiser(vocab, L)

    def eval_loss() -> float:
        with torch.no_grad():
            return float(np.mean([float(d.loss(model, x0, clean, torch.Generator().manual_seed(100 + i)).loss) for i in range(8)]))

    out = d.loss(model, x0, clean, torch.Generator().manual_seed(0))
    out.loss.backward()
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    assert grads and all(bool(torch.isfinite(g).all()) for g in grads)
    assert any(float(g.abs().sum()) > 0 for g in grads)
    model.zero_grad()

    before = eval_loss()
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    g = torch.Generator().manual_seed(2)
    for _ in range(300):
        opt.zero_grad()
        d.loss(model, x0, clean, g).loss.backward()
        opt.step()
    after = eval_loss()
    assert after < 0.5 * before, (before, after)
