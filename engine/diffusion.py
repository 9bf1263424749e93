"""Discrete diffusion over token ids: forward corruption, exact posteriors, negative ELBOs.

Two noises behind one interface (`Diffusion`), built by `make_diffusion`:
  uniform    q(x_t | x_0) = alpha_t onehot(x_0) + (1 - alpha_t) / V       (D3PM-uniform, UDLM, DUO)
  absorbing  q(x_t | x_0) = alpha_t onehot(x_0) + (1 - alpha_t) onehot(m)  (D3PM-absorbing, MDLM)

Glossary
  B, L, V   batch, sequence length, vocabulary size (specials included)
  x0        clean token ids (B, L);  x_t noisy ids at time t;  z = x_t at one position
  t, s      diffusion times, 0 <= s < t <= 1 (s is the earlier, less noisy time)
  alpha_t   schedule.alpha(t): probability that a token is still clean at t;  a_ts = alpha_t / alpha_s
  m         the [MASK] id (absorbing noise only)
  x̂0        the denoiser's distribution over x_0 at each position: softmax of its logits, with
            `forbidden` ids (the mask id, other non-data specials) given probability exactly 0
  clean     (B, L) bool: positions the caller guarantees are clean (pins, prompts, headings):
            never corrupted, passed to the denoiser, excluded from every loss term
  xbar      UDLM's scaled marginal: xbar(x) = V alpha_t x + (1 - alpha_t) 1, for x a one-hot or x̂0

Reverse model (one parameterisation, used by the loss, the discrete NELBO and the sampler):
  p(x_s | x_t) = q(x_s | x_t, x̂0)  ∝  q(x_t | x_s) * sum_x0 q(x_s | x0) x̂0(x0)
This is D3PM's eq. (4) (Austin et al. 2021), which is the same as plugging x̂0 into the
one-hot posterior formula, as UDLM (Schiff et al. 2024) and MDLM (Sahoo et al. 2024) do.
With s = 0 (alpha_0 = 1) it gives the reconstruction model p(x_0 | x_t) ∝ q(x_t | x_0) x̂0(x_0).

Negative ELBO per token (nats), all terms included:
  NELBO = recon + integral_{t_min}^{1} E_q[f(t)] dt + KL(q(x_1 | x0) || p(x_1))
  f(t)    the continuous-time limit of KL(q(x_s|x_t,x0) || p(x_s|x_t)) / (t - s): derived below
          for each noise (uniform: UDLM eq. for the continuous-time uniform NELBO, rewritten so
          that large terms do not cancel; absorbing: MDLM's -alpha'/(1-alpha) log x̂0(x0) at masks)
  recon   -log p(x0 | x_{t_min}): the one discrete step from t_min down to 0. Optional in `loss`
          (one more denoiser call); without it the bound omits integral_0^{t_min}, which is
          O(t_min log(1 / t_min)) per token (the uniform integrand grows like log(1/t) as t -> 0
          unless x̂0 is exact).
  p(x_1)  the marginal of x_1 when x0 is uniform over the non-forbidden ids: uniform over V for
          uniform noise, and (1 - eps) on m plus eps spread over the allowed ids for absorbing
          (the sampler starts from all-[MASK], the eps -> 0 limit of the same prior).
The discrete-time NELBO with T steps on the grid t_i = i / T is
  sum_{i=1}^{T} E_q KL(q(x_{t_{i-1}} | x_{t_i}, x0) || p(x_{t_{i-1}} | x_{t_i})) + KL prior,
whose i = 1 term is the reconstruction term (alpha_0 = 1 makes q(x_0 | x_t, x0) a point mass).

For a denoiser with a tied head (engine.model) the loss never forms the (B, L, V) logits: each
noise's `head_sum` forms them a block of positions at a time and works out the gradient in the
forward (head_integrand for uniform noise, head_cross_entropy over the masked positions only for
absorbing noise; docs/DIFFUSION.md).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import torch
import torch.nn.functional as F
from torch import Tensor

from engine.config import DiffusionConfig
from engine.schedule import Schedule, get_schedule

Denoiser = Callable[[Tensor, Tensor, Tensor], Tensor]  # (x_t (B,L), t (B,), clean (B,L)) -> logits (B,L,V)

# Logit written at forbidden ids: exp(FORBIDDEN_LOGIT - anything finite) is exactly 0 in float32/64,
# and unlike -inf it keeps gradients finite when every id but one is forbidden.
FORBIDDEN_LOGIT = -1e9


@dataclass(frozen=True)
class LossOut:
    """The negative ELBO of a batch, in nats.

    loss          scalar, differentiable: nelbo_sum / n_tokens (nats per non-clean token)
    nelbo_sum     scalar, detached float64: diffusion_sum + recon_sum + prior_sum
    n_tokens      number of non-clean positions the sums run over
    diffusion_sum Monte Carlo estimate of the time integral (continuous) or sum of the i >= 2
                  KL terms (discrete)
    recon_sum     reconstruction term (0 when not computed)
    prior_sum     KL(q(x_1 | x0) || p(x_1)) summed over the non-clean positions (a constant)
    t             (B,) the diffusion times used (continuous loss; empty for the discrete one)
    Bits per token = nelbo_sum / n_tokens / ln 2; a perplexity bound = exp(nelbo_sum / n_tokens).
    """

    loss: Tensor
    nelbo_sum: Tensor
    n_tokens: int
    diffusion_sum: Tensor
    recon_sum: Tensor
    prior_sum: Tensor
    t: Tensor


@runtime_checkable
class Diffusion(Protocol):
    """What the trainer, the evaluator and the sampler need from a noise."""

    name: str
    vocab_size: int
    schedule: Schedule
    t_min: float
    mask_id: int | None
    forbidden: Tensor  # (V,) bool: ids x̂0 never puts mass on
    n_allowed: int  # V minus the forbidden ids

    def masked_logits(self, logits: Tensor) -> Tensor: ...
    def sample_times(self, batch: int, generator: torch.Generator, device: torch.device | str = "cpu") -> Tensor: ...
    def corrupt(self, x0: Tensor, t: Tensor, generator: torch.Generator, clean: Tensor | None = None) -> Tensor: ...
    def prior(self, shape: tuple[int, ...], generator: torch.Generator, device: torch.device | str | None = None) -> Tensor: ...
    def x0_log_probs(self, logits: Tensor) -> Tensor: ...
    def posterior(self, x_t: Tensor, x0_probs: Tensor, t: Tensor, s: Tensor) -> Tensor: ...
    def sample_posterior(self, z: Tensor, x0_weights: Tensor, t: float, s: float, generator: torch.Generator) -> Tensor: ...
    def integrand(self, x0: Tensor, x_t: Tensor, logits: Tensor, t: Tensor) -> Tensor: ...
    def step_kl(self, x0: Tensor, x_t: Tensor, logits: Tensor, t: Tensor, s: Tensor) -> Tensor: ...
    def prior_kl(self) -> float: ...
    def is_decided(self, x_t: Tensor) -> Tensor: ...
    def loss(self, model: Denoiser, x0: Tensor, clean: Tensor | None, generator: torch.Generator, *, reconstruction: bool = False) -> LossOut: ...
    def nelbo_discrete(self, model: Denoiser, x0: Tensor, clean: Tensor | None, T: int, generator: torch.Generator) -> LossOut: ...


def tied_head_weight(model: Denoiser) -> Tensor | None:
    """The (V, D) weights of a model whose logits are features @ W.T and which returns its
    features when called with features_only=True (engine.model.DenoiserBase, also inside DDP);
    None for any other callable."""
    net = model.module if isinstance(model, torch.nn.parallel.DistributedDataParallel) else model
    get = getattr(net, "head_weight", None)
    return get() if callable(get) else None


def _rand(shape: tuple[int, ...], generator: torch.Generator, device: torch.device) -> Tensor:
    """Uniform [0, 1) draws made on the generator's device, returned on `device`."""
    return torch.rand(shape, generator=generator, device=generator.device).to(device)


def _work_dtype(x: Tensor) -> torch.dtype:
    return torch.float64 if x.dtype == torch.float64 else torch.float32


def _columns(forbidden: Tensor | None) -> Tensor | None:
    """The ids of a (V,) bool mask as an index tensor, or None when there is no mask."""
    return None if forbidden is None else forbidden.nonzero()[:, 0]


def _masked(logits: Tensor, cols: Tensor | None) -> Tensor:
    """Logits in the work dtype with the forbidden ids `cols` (see _columns), if any, at
    FORBIDDEN_LOGIT (a copy, then those few columns filled: cheaper than a masked pass)."""
    lg = logits.to(_work_dtype(logits))
    if cols is None:
        return lg
    lg = lg.clone() if lg is logits else lg
    return lg.index_fill_(-1, cols, FORBIDDEN_LOGIT)


def _times(t: Tensor | float, n: int, device: torch.device) -> Tensor:
    """t as a float64 column (n, 1) on `device`."""
    t = torch.as_tensor(t, dtype=torch.float64, device=device)
    return t.expand(n).reshape(n, 1) if t.dim() == 0 else t.reshape(n, 1)


def categorical(probs: Tensor, generator: torch.Generator, cdf: Tensor | None = None) -> Tensor:
    """(n,) one draw per row of (n, V) probabilities by inverse CDF: one uniform per row and a
    cumulative sum, instead of V random numbers per row. An id with probability 0 is never drawn
    (the search takes the first id whose cumulative mass is strictly above u * total). Rows need
    not be normalised; `cdf` may be passed when the caller already has probs.cumsum(-1)."""
    cdf = probs.cumsum(-1) if cdf is None else cdf  # (n, V)
    total = cdf[:, -1:]  # (n, 1)
    u = torch.rand(probs.shape[0], 1, generator=generator, device=generator.device, dtype=cdf.dtype).to(cdf.device)
    idx = torch.searchsorted(cdf, u * total, right=True)[:, 0]  # (n,)
    over = idx >= probs.shape[-1]  # u * total rounded up to the total: take the most probable id
    return torch.where(over, probs.argmax(-1), idx) if bool(over.any()) else idx


class _DiffusionBase:
    """Code shared by both noises: forbidden ids, time sampling, the two NELBO estimators."""

    name = "base"

    def __init__(self, vocab_size: int, schedule: Schedule, t_min: float, mask_id: int | None, forbidden_ids: Iterable[int]) -> None:
        if vocab_size < 2:
            raise ValueError(f"vocab_size must be at least 2, got {vocab_size}")
        if not 0.0 <= t_min < 1.0:
            raise ValueError(f"t_min must be in [0, 1), got {t_min}")
        ids = set(int(i) for i in forbidden_ids)
        if mask_id is not None:
            ids.add(int(mask_id))
        bad = sorted(i for i in ids if not 0 <= i < vocab_size)
        if bad:
            raise ValueError(f"forbidden ids {bad} are outside the vocabulary 0..{vocab_size - 1}")
        if len(ids) >= vocab_size:
            raise ValueError("every id is forbidden: x̂0 would have no support")
        self.vocab_size = vocab_size
        self.schedule = schedule
        self.t_min = t_min
        self.mask_id = None if mask_id is None else int(mask_id)
        self.forbidden = torch.zeros(vocab_size, dtype=torch.bool)  # (V,)
        self.forbidden[sorted(ids)] = True
        self.n_allowed = vocab_size - len(ids)

    # ----- x̂0 -------------------------------------------------------------------------------
    def masked_logits(self, logits: Tensor) -> Tensor:
        """Logits in float32 (float64 if given) with forbidden ids set to FORBIDDEN_LOGIT."""
        return _masked(logits, _columns(self.forbidden.to(logits.device)) if self.forbidden.any() else None)

    def x0_log_probs(self, logits: Tensor) -> Tensor:
        """log x̂0 (..., V): log-softmax of the logits with forbidden ids at probability 0."""
        return torch.log_softmax(self.masked_logits(logits), dim=-1)

    def _forbidden_on(self, device: torch.device) -> Tensor | None:
        """The (V,) bool mask of forbidden ids on `device`, or None when no id is forbidden."""
        return self.forbidden.to(device) if self.forbidden.any() else None

    # ----- times ------------------------------------------------------------------------------
    def sample_times(self, batch: int, generator: torch.Generator, device: torch.device | str = "cpu") -> Tensor:
        """(B,) float32 low-discrepancy times in [t_min, 1]: t_b = t_min + (1 - t_min) ((u + b/B) mod 1),
        one uniform u per batch (the antithetic sampler of Kingma et al. 2021, as used by MDLM)."""
        u = torch.rand((), generator=generator, device=generator.device, dtype=torch.float64).cpu()
        grid = (u + torch.arange(batch, dtype=torch.float64) / batch) % 1.0  # (B,)
        return (self.t_min + (1.0 - self.t_min) * grid).to(device=device, dtype=torch.float32)

    # ----- one discrete step ------------------------------------------------------------------
    def step_kl(self, x0: Tensor, x_t: Tensor, logits: Tensor, t: Tensor, s: Tensor) -> Tensor:
        """(B, L) KL(q(x_s | x_t, x0) || p(x_s | x_t)) with p the plug-in posterior of x̂0 (nats).

        Computed from `posterior` alone (independently of the continuous-time formulas), so the
        discrete NELBO checks them. With s = 0 this is -log p(x0 | x_t), the reconstruction term."""
        p0 = torch.softmax(self.masked_logits(logits), dim=-1)  # (B, L, V)
        q_post = self.posterior(x_t, F.one_hot(x0, self.vocab_size).to(p0.dtype), t, s)  # (B, L, V)
        p_post = self.posterior(x_t, p0, t, s)  # (B, L, V)
        return (torch.xlogy(q_post, q_post) - torch.xlogy(q_post, p_post)).sum(-1)

    # ----- estimators -------------------------------------------------------------------------
    def _out(self, diffusion: Tensor, recon: Tensor, free: Tensor, t: Tensor, dtype: torch.dtype) -> LossOut:
        n = int(free.sum())
        prior = torch.tensor(self.prior_kl() * n, dtype=torch.float64, device=diffusion.device)
        total = diffusion + recon + prior
        return LossOut(
            loss=(total / max(n, 1)).to(dtype),
            nelbo_sum=total.detach(),
            n_tokens=n,
            diffusion_sum=diffusion.detach(),
            recon_sum=recon.detach(),
            prior_sum=prior,
            t=t,
        )

    def loss(self, model: Denoiser, x0: Tensor, clean: Tensor | None, generator: torch.Generator, *, reconstruction: bool = False) -> LossOut:
        """Continuous-time NELBO of a batch x0 (B, L): one time per sequence, low-discrepancy in
        [t_min, 1], weighted by (1 - t_min); `clean` positions stay clean and are excluded.

        With reconstruction=True, one more denoiser call at t = t_min adds -log p(x0 | x_{t_min})
        so that nelbo_sum is a bound on -log p(x0) (rather than omitting integral_0^{t_min})."""
        B, L = x0.shape
        clean = torch.zeros_like(x0, dtype=torch.bool) if clean is None else clean.to(torch.bool)
        free = ~clean  # (B, L)
        t = self.sample_times(B, generator, x0.device)  # (B,)
        x_t = self.corrupt(x0, t, generator, clean)  # (B, L)
        diffusion, dtype = self._diffusion_sum(model, x0, x_t, t, clean)
        recon = torch.zeros((), dtype=torch.float64, device=x0.device)
        if reconstruction and self.t_min > 0:
            t_r = torch.full((B,), self.t_min, dtype=torch.float32, device=x0.device)
            x_r = self.corrupt(x0, t_r, generator, clean)
            kl = self.step_kl(x0, x_r, model(x_r, t_r, clean), t_r, torch.zeros_like(t_r))
            recon = kl.to(torch.float64).masked_fill(clean, 0.0).sum()
        return self._out(diffusion, recon, free, t, dtype)

    def _diffusion_sum(self, model: Denoiser, x0: Tensor, x_t: Tensor, t: Tensor, clean: Tensor) -> tuple[Tensor, torch.dtype]:
        """(the integrand summed over the non-clean positions, weighted by 1 - t_min; the
        loss's dtype) for one time per sequence.

        Fused with the head (`head_sum`) when the model has a tied head (`head_weight`, as every
        denoiser of engine.model does): the (B, L, V) logits are formed a block of positions at
        a time and never kept (docs/BENCHMARKS.md, tenth and twelfth sessions). Any other
        callable gets the logits whole and `integrand`."""
        W = tied_head_weight(model)
        if W is not None:
            h = model(x_t, t, clean, features_only=True)  # (B, L, D)
            return self.head_sum(h, W, x0, x_t, t, clean), torch.promote_types(h.dtype, torch.float32)
        logits = model(x_t, t, clean)  # (B, L, V)
        f = self.integrand(x0, x_t, logits, t)  # (B, L) float64
        return (f * (1.0 - self.t_min)).masked_fill(clean, 0.0).sum(), torch.promote_types(logits.dtype, torch.float32)

    def nelbo_discrete(self, model: Denoiser, x0: Tensor, clean: Tensor | None, T: int, generator: torch.Generator) -> LossOut:
        """Discrete-time (D3PM-style) NELBO with T steps on t_i = i / T: one fresh x_{t_i} per step
        and sequence, the KL between exact posteriors computed in closed form, plus the prior KL.

        `model` is any callable (x_t, t, clean) -> logits; to use a distribution, return its log."""
        if T < 1:
            raise ValueError(f"T must be at least 1, got {T}")
        B, L = x0.shape
        clean = torch.zeros_like(x0, dtype=torch.bool) if clean is None else clean.to(torch.bool)
        free = ~clean
        diffusion = torch.zeros((), dtype=torch.float64, device=x0.device)
        recon = torch.zeros((), dtype=torch.float64, device=x0.device)
        dtype = torch.float32
        for i in range(1, T + 1):
            t = torch.full((B,), i / T, dtype=torch.float32, device=x0.device)
            s = torch.full((B,), (i - 1) / T, dtype=torch.float32, device=x0.device)
            x_t = self.corrupt(x0, t, generator, clean)
            logits = model(x_t, t, clean)
            dtype = torch.promote_types(logits.dtype, torch.float32)
            kl = self.step_kl(x0, x_t, logits, t, s).to(torch.float64).masked_fill(clean, 0.0).sum()
            if i == 1:
                recon = recon + kl
            else:
                diffusion = diffusion + kl
        return self._out(diffusion, recon, free, torch.empty(0), dtype)

    # to be provided by each noise
    def posterior(self, x_t: Tensor, x0_probs: Tensor, t: Tensor, s: Tensor) -> Tensor:
        raise NotImplementedError

    def integrand(self, x0: Tensor, x_t: Tensor, logits: Tensor, t: Tensor) -> Tensor:
        raise NotImplementedError

    def head_sum(self, h: Tensor, W: Tensor, x0: Tensor, x_t: Tensor, t: Tensor, clean: Tensor) -> Tensor:
        """The loss's diffusion sum for features h (B, L, D) and tied head weights W (V, D): the
        sum over the non-clean positions of (1 - t_min) f, f the integrand of the logits h W^T,
        without the (B, L, V) logits in memory. Differentiable in h and W."""
        raise NotImplementedError

    def prior_kl(self) -> float:
        raise NotImplementedError

    def corrupt(self, x0: Tensor, t: Tensor, generator: torch.Generator, clean: Tensor | None = None) -> Tensor:
        raise NotImplementedError


class UniformDiffusion(_DiffusionBase):
    """Uniform-state noise: a corrupted token is replaced by an id drawn uniformly from all V ids
    (it may redraw the same id). Continuous-time NELBO after UDLM (Schiff et al. 2024) / DUO
    (Sahoo et al. 2025); posterior after D3PM (Austin et al. 2021)."""

    name = "uniform"

    def corrupt(self, x0: Tensor, t: Tensor, generator: torch.Generator, clean: Tensor | None = None) -> Tensor:
        """x_t ~ q(x_t | x0): keep x0 with probability alpha_t, else a uniform id; clean kept."""
        B, L = x0.shape
        alpha = _times(self.schedule.alpha(t.to(torch.float64)), B, x0.device)  # (B, 1)
        keep = _rand((B, L), generator, x0.device).to(torch.float64) < alpha  # (B, L)
        noise = torch.randint(self.vocab_size, (B, L), generator=generator, device=generator.device).to(x0.device)
        x_t = torch.where(keep, x0, noise)  # (B, L)
        return x_t if clean is None else torch.where(clean.to(torch.bool), x0, x_t)

    def prior(self, shape: tuple[int, ...], generator: torch.Generator, device: torch.device | str | None = None) -> Tensor:
        """x_1 ~ uniform over all V ids."""
        x = torch.randint(self.vocab_size, shape, generator=generator, device=generator.device)
        return x.to(device) if device is not None else x

    def is_decided(self, x_t: Tensor) -> Tensor:
        """Positions whose reverse step is a point mass: none under uniform noise."""
        return torch.zeros_like(x_t, dtype=torch.bool)

    def posterior(self, x_t: Tensor, x0_probs: Tensor, t: Tensor, s: Tensor) -> Tensor:
        """(B, L, V) p(x_s = j | x_t = z) ∝ q(z | j) q(j | x̂0) with
        q(z | j) = a_ts [j = z] + (1 - a_ts) / V and q(j | x̂0) = alpha_s x̂0_j + (1 - alpha_s) / V."""
        B, L, V = x0_probs.shape
        dt = x0_probs.dtype
        a_t = _times(self.schedule.alpha(t.to(torch.float64)), B, x0_probs.device).to(dt)[:, :, None]  # (B, 1, 1)
        a_s = _times(self.schedule.alpha(s.to(torch.float64)), B, x0_probs.device).to(dt)[:, :, None]  # (B, 1, 1)
        a_ts = a_t / a_s
        marg_s = a_s * x0_probs + (1.0 - a_s) / V  # (B, L, V) q(x_s | x̂0)
        lik = (1.0 - a_ts) / V + a_ts * F.one_hot(x_t, V).to(dt)  # (B, L, V) q(x_t = z | x_s = j)
        joint = lik * marg_s
        return joint / joint.sum(-1, keepdim=True).clamp_min(torch.finfo(dt).tiny)

    def sample_posterior(self, z: Tensor, x0_weights: Tensor, t: float, s: float, generator: torch.Generator) -> Tensor:
        """(n,) one draw of x_s ~ `posterior` at each position, without building the (n, V) posterior.

        `x0_weights` (n, V) is x̂0 up to a positive factor per row (probabilities, or exp(logits
        - max)). With m = alpha_s x̂0 + (1 - alpha_s) / V (so sum m = 1) the posterior is the mixture
          x_s = z                with probability w = a_ts m_z / ((1 - a_ts) / V + a_ts m_z),
          x_s ~ m                otherwise, i.e. ~ x̂0 with probability alpha_s, else uniform.
        Cost: one cumulative sum over (n, V) and O(n) random numbers."""
        n, V = x0_weights.shape
        a_t, a_s = float(self.schedule.alpha(t)), float(self.schedule.alpha(s))
        a_ts = a_t / a_s
        cdf = x0_weights.cumsum(-1)  # (n, V)
        p_z = (x0_weights.gather(-1, z[:, None].to(cdf.device))[:, 0] / cdf[:, -1]).to("cpu", torch.float64)  # (n,)
        m_z = a_s * p_z + (1.0 - a_s) / V  # (n,)
        w = a_ts * m_z / ((1.0 - a_ts) / V + a_ts * m_z)  # (n,)
        u_stay = torch.rand(n, generator=generator, dtype=torch.float64)
        u_src = torch.rand(n, generator=generator, dtype=torch.float64)
        uniform = torch.randint(V, (n,), generator=generator)
        from_x0 = categorical(x0_weights, generator, cdf=cdf).cpu()
        moved = torch.where(u_src < a_s, from_x0, uniform)
        return torch.where(u_stay < w, z.cpu(), moved)

    def integrand(self, x0: Tensor, x_t: Tensor, logits: Tensor, t: Tensor) -> Tensor:
        """(B, L) float64 f(t): lim_{s -> t} KL(q(x_s | x_t, x0) || p(x_s | x_t)) / (t - s).

        For s = t - dt the reverse step is a jump process with rates (beta / V) xbar_j / xbar_z
        (true) and (beta / V) xbarθ_j / xbarθ_z (model) out of z, where beta = -alpha' / alpha,
        xbar = xbar(onehot(x0)), xbarθ = xbar(x̂0). The KL rate of two jump processes gives
          f = (beta / V) [ sum_{j != z} r_j log(r_j / ρ_j) + V / xbarθ_z - V / xbar_z ],
          r_j = xbar_j / xbar_z, ρ_j = xbarθ_j / xbarθ_z,
        which is UDLM's continuous-time NELBO integrand. With A = 1 - alpha, C = V alpha + A
        (xbar at x0), ℓ_j = log xbarθ_j, D = sum_{j != x0} (ℓ_z - ℓ_j), δ = 1 - x̂0(x0) and
        u = log(V alpha / A) + log x̂0(z), the bracket K is
          z == x0:  (V-1)(A/C) log(A/C) + (A/C) D + V^2 alpha δ / (xbarθ_z C)
          z != x0:  -(C/A) log1p(-V alpha δ / C) - (V-1) softplus(u)
                    + (V/A) (softplus(u) - sigmoid(u)) + D
        (the same sum, grouped so that no two large terms cancel: every piece is 0 for a
        denoiser that puts all its mass on x0). δ comes from a log-sum-exp over the other ids.
        Where 1 - alpha_t underflows (t ~ 0), A is taken as 1e-30.

        Computed by `uniform_integrand` a block of positions at a time, with the gradient with
        respect to the logits written in closed form (see _uniform_rows).
        """
        alpha, beta = self._rates(t, x0.shape[0], x0.device)
        return uniform_integrand(logits, x0, x_t, alpha, beta, self._forbidden_on(logits.device))

    def _rates(self, t: Tensor, B: int, device: torch.device) -> tuple[Tensor, Tensor]:
        """alpha_t and beta_t = -alpha'_t / alpha_t as float64 columns (B, 1)."""
        tt = t.to(torch.float64)
        alpha = _times(self.schedule.alpha(tt), B, device)
        return alpha, -_times(self.schedule.dalpha(tt), B, device) / alpha

    def head_sum(self, h: Tensor, W: Tensor, x0: Tensor, x_t: Tensor, t: Tensor, clean: Tensor) -> Tensor:
        """See the base class: fused by head_integrand, 0.77x the time of the head and loss
        unfused at run 2's shape on one core (docs/BENCHMARKS.md, tenth session)."""
        alpha, beta = self._rates(t, x0.shape[0], x0.device)
        scale = (~clean).to(torch.float64) * (1.0 - self.t_min)  # (B, L): 0 at clean positions
        return head_integrand(h, W, x0, x_t, alpha, beta, scale, self._forbidden_on(h.device))[0]

    def prior_kl(self) -> float:
        """KL(q(x_1 | x0) || uniform) per token (the same for every x0)."""
        V, e = self.vocab_size, self.schedule.eps
        a = e + (1.0 - e) / V
        b = (1.0 - e) / V
        return a * math.log(a * V) + (V - 1) * b * math.log(b * V)


class AbsorbingDiffusion(_DiffusionBase):
    """Absorbing ([MASK]) noise: a corrupted token becomes the mask id m and stays m.
    Continuous-time NELBO of MDLM (Sahoo et al. 2024); posterior after D3PM (Austin et al. 2021)."""

    name = "absorbing"

    def __init__(self, vocab_size: int, schedule: Schedule, t_min: float, mask_id: int, forbidden_ids: Iterable[int] = ()) -> None:
        super().__init__(vocab_size, schedule, t_min, mask_id, forbidden_ids)
        self.m = int(mask_id)

    def corrupt(self, x0: Tensor, t: Tensor, generator: torch.Generator, clean: Tensor | None = None) -> Tensor:
        """x_t ~ q(x_t | x0): keep x0 with probability alpha_t, else m; clean positions kept."""
        B, L = x0.shape
        alpha = _times(self.schedule.alpha(t.to(torch.float64)), B, x0.device)  # (B, 1)
        keep = _rand((B, L), generator, x0.device).to(torch.float64) < alpha  # (B, L)
        x_t = torch.where(keep, x0, torch.full_like(x0, self.m))  # (B, L)
        return x_t if clean is None else torch.where(clean.to(torch.bool), x0, x_t)

    def prior(self, shape: tuple[int, ...], generator: torch.Generator, device: torch.device | str | None = None) -> Tensor:
        """x_1 = all m (the alpha(1) -> 0 limit; consumes no randomness)."""
        return torch.full(shape, self.m, dtype=torch.long, device=device if device is not None else generator.device)

    def is_decided(self, x_t: Tensor) -> Tensor:
        """Positions whose reverse step is a point mass: every unmasked token stays (carry-over)."""
        return x_t != self.m

    def posterior(self, x_t: Tensor, x0_probs: Tensor, t: Tensor, s: Tensor) -> Tensor:
        """(B, L, V) p(x_s = j | x_t = z) ∝ q(z | j) q(j | x̂0).

        z == m: j != m gets (alpha_s - alpha_t) x̂0_j, j = m gets (1 - alpha_s) + alpha_s x̂0_m
                (normalised; equals (1 - alpha_s) / (1 - alpha_t) on m when x̂0_m = 0).
        z != m: a point mass on z. (Bayes gives this whenever x̂0_z > 0; when x̂0_z = 0 the
                formula is 0/0 and we keep z, MDLM's carry-over.)"""
        B, L, V = x0_probs.shape
        dt = x0_probs.dtype
        a_t = _times(self.schedule.alpha(t.to(torch.float64)), B, x0_probs.device).to(dt)[:, :, None]  # (B, 1, 1)
        a_s = _times(self.schedule.alpha(s.to(torch.float64)), B, x0_probs.device).to(dt)[:, :, None]  # (B, 1, 1)
        joint = (a_s - a_t) * x0_probs  # (B, L, V)
        joint[..., self.m] = (1.0 - a_s[..., 0]) + a_s[..., 0] * x0_probs[..., self.m]
        masked = joint / joint.sum(-1, keepdim=True).clamp_min(torch.finfo(dt).tiny)
        keep = F.one_hot(x_t, V).to(dt)  # (B, L, V)
        return torch.where((x_t == self.m)[..., None], masked, keep)

    def sample_posterior(self, z: Tensor, x0_weights: Tensor, t: float, s: float, generator: torch.Generator) -> Tensor:
        """(n,) one draw of x_s ~ `posterior`: an unmasked z stays; a mask is revealed with
        probability (alpha_s - alpha_t)(1 - x̂0_m) / ((1 - alpha_s) + alpha_s x̂0_m + (alpha_s - alpha_t)(1 - x̂0_m)),
        as a draw from x̂0 without m, else it stays m.
        `x0_weights` (n, V) is x̂0 up to a positive factor per row. Cost: one cumulative sum over
        (n, V) and O(n) random numbers."""
        n = z.shape[0]
        a_t, a_s = float(self.schedule.alpha(t)), float(self.schedule.alpha(s))
        total = x0_weights.sum(-1)  # (n,)
        p_m = (x0_weights[:, self.m] / total).to("cpu", torch.float64)  # (n,) 0 when m is forbidden
        stay_mask = ((1.0 - a_s) + a_s * p_m) / ((1.0 - a_s) + a_s * p_m + (a_s - a_t) * (1.0 - p_m))  # (n,)
        u = torch.rand(n, generator=generator, dtype=torch.float64)
        without_m = x0_weights if not bool(p_m.any()) else x0_weights.index_fill(-1, torch.tensor([self.m], device=x0_weights.device), 0.0)
        revealed = categorical(without_m, generator).cpu()
        z = z.cpu()
        return torch.where(z != self.m, z, torch.where(u < stay_mask, z, revealed))

    def integrand(self, x0: Tensor, x_t: Tensor, logits: Tensor, t: Tensor) -> Tensor:
        """(B, L) float64 f(t) = -alpha'_t / (1 - alpha_t) * (-log x̂0(x0)) at masked positions, 0
        elsewhere: lim KL / (t - s), since the KL at a mask is (alpha_s - alpha_t)/(1 - alpha_t)
        * (-log x̂0(x0)) and 0 at an unmasked token (MDLM, eq. for the continuous-time NELBO)."""
        logp = self.x0_log_probs(logits)  # (B, L, V)
        nll = -logp.gather(-1, x0[..., None])[..., 0].to(torch.float64)  # (B, L)
        w = self._mask_weight(t, x0.shape[0], x0.device)  # (B, 1)
        return torch.where(x_t == self.m, w * nll, torch.zeros_like(nll))

    def _mask_weight(self, t: Tensor, B: int, device: torch.device) -> Tensor:
        """-alpha'_t / (1 - alpha_t) as a float64 column (B, 1): the weight of -log x̂0(x0) at a mask."""
        tt = t.to(torch.float64)
        alpha = _times(self.schedule.alpha(tt), B, device)  # (B, 1)
        return -_times(self.schedule.dalpha(tt), B, device) / (1.0 - alpha).clamp_min(1e-30)

    def head_sum(self, h: Tensor, W: Tensor, x0: Tensor, x_t: Tensor, t: Tensor, clean: Tensor) -> Tensor:
        """See the base class. Only the masked positions have a nonzero integrand, so only their
        logits are formed (head_cross_entropy): a fraction of about t of the positions, half on
        average over the training times, and never the (B, L, V) logits."""
        B, L = x0.shape
        rows = ((x_t == self.m) & ~clean).reshape(-1).nonzero()[:, 0]  # (N,) masked positions
        w = self._mask_weight(t, B, x0.device).expand(B, L).reshape(-1)[rows] * (1.0 - self.t_min)  # (N,)
        feats = h.reshape(B * L, h.shape[-1])[rows]  # (N, D)
        return head_cross_entropy(feats, W, x0.reshape(-1)[rows], w, self._forbidden_on(h.device))[0]

    def prior_kl(self) -> float:
        """KL(alpha_1 δ_x0 + (1 - alpha_1) δ_m || alpha_1 U(allowed) + (1 - alpha_1) δ_m) = alpha_1 log n_allowed."""
        return self.schedule.eps * math.log(self.n_allowed)


# ----------------------------------------------------------------------------- uniform integrand


def _uniform_rows(lg: Tensor, x0: Tensor, z: Tensor, alpha: Tensor, beta: Tensor, V: int,
                  coefficients: bool = False, keep: list[Tensor] | None = None) -> tuple[Tensor, Tensor | None]:
    """UniformDiffusion.integrand's f for R positions: lg (R, V) masked logits (float32, or
    float64), x0 and z (R,) ids, alpha and beta (R, 1) float64. Returns f (R,) float64 and,
    with `coefficients`, the per-position coefficients of its gradient (R, 7) float64:
    [c1, c2, c3, g_z, g_x0, lse, log(V alpha / A)] (derived below). Plain torch ops, so
    autograd through it is the reference for the closed-form gradient (tests). A `keep` list
    gets the (R, V) scratch e = exp(s) and w appended, for _logit_grad_kept.

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
    # ell - log A = softplus(s) (log1p(exp) is ~1.5x faster here than F.softplus; exp cannot
    # overflow: s <= log(V alpha / A) <= log V + 69 with A >= 1e-30)
    e = torch.exp(s)  # (R, V): V alpha x̂0 / A
    sp_all = torch.log1p(e)
    # D = sum_{j != x0} (ell_z - ell_j) = (V-1) sp_z - sum_{j != x0} sp_j: log A cancels
    # exactly (no float32 rounding of log A in every term). The sum leaves x0 out before adding
    # (x̂0(x0) near 1 would otherwise swamp the small terms), so float32's cascade sum is as
    # accurate as the terms are (a float64 accumulation costs 8x more per row)
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
    lg (R, V) the logits, lse and log_ratio (R, 1) from _uniform_rows' coefficients, g (R, 5)
    the coefficients c1, c2, c3, g_z, g_x0 already scaled by the upstream gradient, `cols` the
    forbidden ids (their entries set to 0) or None."""
    torch.sub(lg, lse, out=out)  # log x̂0
    w = torch.add(out, log_ratio).sigmoid_()  # (R, V)
    out.exp_()  # x̂0
    out.mul_(torch.addcmul(g[:, 0:1], w, g[:, 2:3])).addcmul_(w, g[:, 1:2])  # p (c1 + c3 w) + c2 w
    return _write_ids(out, g, z, x0, cols)


def _logit_grad_kept(out: Tensor, e: Tensor, w: Tensor, coef: Tensor, scale: Tensor, z: Tensor,
                     x0: Tensor, cols: Tensor | None) -> Tensor:
    """_logit_grad from what _uniform_rows kept (`keep`), with no transcendental pass: x̂0_i =
    e_i A / (V alpha), so p (c1 + c3 w) + c2 w = e (c1' + c3' w) + c2 w with c1', c3' = c1, c3
    times A / (V alpha) = exp(-coef[:, 6]). coef (R, 7) float64 from _uniform_rows, scale (R,)
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
        cols = _columns(forbidden)
        for r in _row_blocks(logits):
            f[r], c = _uniform_rows(_masked(lg_all[r], cols), x0[r], z[r], alpha[r], beta[r], V, coefficients=want)
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


def _head_rows(device: torch.device, vocab: int) -> int:
    """Positions per block of the fused head: ~2 M logits (8 MiB in float32) on a CPU, which
    measured fastest at V = 8,192 (256 positions; 128 and 1,024 were 5-10 % slower); every
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
            f[q], c = _uniform_rows(lg[q], x0[rr], z[rr], alpha[rr], beta[rr], V, coefficients=want, keep=kept)
            if kept is not None:  # the block's logits become its gradient in place
                _logit_grad_kept(lg[q], *kept, c, scale[rr], z[rr], x0[rr], cols)
        return f

    return _head_loop(h, W, cols, grad_h, grad_W, rows)


class _FusedHeadSum(torch.autograd.Function):
    """sum_i weight_i f_i with the logits h W^T formed a block of positions at a time and never
    kept: `blocks` (_head_blocks or _ce_blocks) works out the gradients in the forward too (the
    sum is linear in f with known weights, so the upstream gradient is one scalar), and the
    backward only scales them. The (N, V) logits and their gradient, 2 x 268 MB at run 2's
    shape, are never in memory. Inputs (blocks, h, W, *rest, weights): `rest` goes to `blocks`
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
            _columns(forbidden), scale.reshape(-1).to(torch.float64))
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
    return _fused_head_sum(_ce_blocks, h, W, target, _columns(forbidden), weight.to(torch.float64))


def make_diffusion(cfg: DiffusionConfig, vocab_size: int, mask_id: int | None = None, forbidden_ids: Iterable[int] = ()) -> UniformDiffusion | AbsorbingDiffusion:
    """The noise named by cfg.noise. `mask_id` (required for absorbing) and `forbidden_ids` are
    never given probability by x̂0, under either noise."""
    schedule = get_schedule(cfg.schedule, cfg.eps)
    if cfg.noise == "uniform":
        return UniformDiffusion(vocab_size, schedule, cfg.t_min, mask_id, forbidden_ids)
    if cfg.noise == "absorbing":
        if mask_id is None:
            raise ValueError("absorbing noise needs a mask_id")
        return AbsorbingDiffusion(vocab_size, schedule, cfg.t_min, mask_id, forbidden_ids)
    raise ValueError(f"unknown noise {cfg.noise!r}; expected 'uniform' or 'absorbing'")


def random_clean_mask(B: int, L: int, generator: torch.Generator, p: float = 0.5) -> Tensor:
    """(B, L) bool on CPU: per sequence, with probability 1 - p nothing is clean; otherwise one of
    (chosen uniformly)
      prefix     positions 0..n-1, n uniform in 1..max(1, L // 2)  (a prompt)
      spans      1..4 spans of 1..max(1, L // 8) tokens at random places  (pinned terms)
      headings   a short span (1..5 tokens) at the start, then again after gaps of
                 4..max(4, L // 3) tokens  (template headings)
    At least one position is always left free."""
    if not 0.0 <= p <= 1.0:
        raise ValueError(f"p must be in [0, 1], got {p}")
    K = L + 16  # enough uniforms per sequence for any of the three shapes
    draws = torch.rand((B, K), generator=generator, device=generator.device, dtype=torch.float64).cpu().tolist()  # one transfer
    mask = torch.zeros(B, L, dtype=torch.bool)  # (B, L)
    for b in range(B):
        stream = iter(draws[b])

        def randint(lo: int, hi: int) -> int:  # uniform in lo..hi inclusive
            return lo + min(int(next(stream) * (hi - lo + 1)), hi - lo)

        if next(stream) >= p:
            continue
        kind = randint(0, 2)
        if kind == 0:
            mask[b, : randint(1, max(1, L // 2))] = True
        elif kind == 1:
            for _ in range(randint(1, 4)):
                start = randint(0, L - 1)
                mask[b, start : start + randint(1, max(1, L // 8))] = True
        else:
            pos = 0
            while pos < L:
                h = randint(1, 5)
                mask[b, pos : pos + h] = True
                pos += h + randint(4, max(4, L // 3))
        if mask[b].all():
            mask[b, -1] = False
    return mask
