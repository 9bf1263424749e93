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
noise's `head_sum` calls a fused kernel of engine.kernels (docs/DIFFUSION.md).
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
from engine.draws import categorical
from engine.kernels import forbidden_columns, head_cross_entropy, head_integrand, mask_forbidden, uniform_integrand
from engine.schedule import Schedule, get_schedule

Denoiser = Callable[[Tensor, Tensor, Tensor], Tensor]  # (x_t (B,L), t (B,), clean (B,L)) -> logits (B,L,V)


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
    features when called with features_only=True (engine.denoiser.DenoiserBase, also inside DDP);
    None for any other callable."""
    net = model.module if isinstance(model, torch.nn.parallel.DistributedDataParallel) else model
    get = getattr(net, "head_weight", None)
    return get() if callable(get) else None


def _rand(shape: tuple[int, ...], generator: torch.Generator, device: torch.device) -> Tensor:
    """Uniform [0, 1) draws made on the generator's device, returned on `device`."""
    return torch.rand(shape, generator=generator, device=generator.device).to(device)


def _times(t: Tensor | float, n: int, device: torch.device) -> Tensor:
    """t as a float64 column (n, 1) on `device`."""
    t = torch.as_tensor(t, dtype=torch.float64, device=device)
    return t.expand(n).reshape(n, 1) if t.dim() == 0 else t.reshape(n, 1)


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
        return mask_forbidden(logits, forbidden_columns(self.forbidden.to(logits.device)) if self.forbidden.any() else None)

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
        a time and never kept. Any other callable gets the logits whole and `integrand`."""
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
        Cost: a few passes over (n, V) and O(n) random numbers."""
        n, V = x0_weights.shape
        a_t, a_s = float(self.schedule.alpha(t)), float(self.schedule.alpha(s))
        a_ts = a_t / a_s
        total = x0_weights.sum(-1)  # (n,)
        p_z = (x0_weights.gather(-1, z[:, None].to(total.device))[:, 0] / total).to("cpu", torch.float64)  # (n,)
        m_z = a_s * p_z + (1.0 - a_s) / V  # (n,)
        w = a_ts * m_z / ((1.0 - a_ts) / V + a_ts * m_z)  # (n,)
        u_stay = torch.rand(n, generator=generator, dtype=torch.float64)
        u_src = torch.rand(n, generator=generator, dtype=torch.float64)
        uniform = torch.randint(V, (n,), generator=generator)
        from_x0 = categorical(x0_weights, generator).cpu()
        moved = torch.where(u_src < a_s, from_x0, uniform)
        return torch.where(u_stay < w, z.cpu(), moved)

    def integrand(self, x0: Tensor, x_t: Tensor, logits: Tensor, t: Tensor) -> Tensor:
        """(B, L) float64 f(t): lim_{s -> t} KL(q(x_s | x_t, x0) || p(x_s | x_t)) / (t - s).

        For s = t - dt the reverse step is a jump process with rates (beta / V) xbar_j / xbar_z
        (true) and (beta / V) xbarθ_j / xbarθ_z (model) out of z, where beta = -alpha' / alpha,
        xbar = xbar(onehot(x0)), xbarθ = xbar(x̂0). The KL rate of two jump processes gives
          f = (beta / V) [ sum_{j != z} r_j log(r_j / ρ_j) + V / xbarθ_z - V / xbar_z ],
          r_j = xbar_j / xbar_z, ρ_j = xbarθ_j / xbarθ_z,
        which is UDLM's continuous-time NELBO integrand. Computed by engine.kernels.
        uniform_integrand a block of positions at a time, the bracket regrouped so that no two
        large terms cancel and the gradient with respect to the logits written in closed form
        (see engine.kernels.uniform_rows).
        """
        alpha, beta = self._rates(t, x0.shape[0], x0.device)
        return uniform_integrand(logits, x0, x_t, alpha, beta, self._forbidden_on(logits.device))

    def _rates(self, t: Tensor, B: int, device: torch.device) -> tuple[Tensor, Tensor]:
        """alpha_t and beta_t = -alpha'_t / alpha_t as float64 columns (B, 1)."""
        tt = t.to(torch.float64)
        alpha = _times(self.schedule.alpha(tt), B, device)
        return alpha, -_times(self.schedule.dalpha(tt), B, device) / alpha

    def head_sum(self, h: Tensor, W: Tensor, x0: Tensor, x_t: Tensor, t: Tensor, clean: Tensor) -> Tensor:
        """See the base class: fused by head_integrand, faster than the head and loss unfused
        (docs/BENCHMARKS.md)."""
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
        `x0_weights` (n, V) is x̂0 up to a positive factor per row. Cost: a few passes over
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
