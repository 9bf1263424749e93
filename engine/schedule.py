"""Noise schedules: alpha(t) and its derivative, as pure functions of the diffusion time t.

alpha(t) is the probability that a token is still clean at time t (uniform-state and absorbing
noise alike): q(x_t | x_0) = alpha(t) * onehot(x_0) + (1 - alpha(t)) * pi, where pi is uniform
over the vocabulary (uniform noise) or a point mass on [MASK] (absorbing noise).

Glossary
  t        diffusion time in [0, 1]; t = 0 is data, t = 1 is (almost) pure noise
  alpha    alpha(t): alpha(0) = 1, alpha(1) = eps, strictly decreasing on [0, 1]
  dalpha   d alpha / d t (<= 0)
  eps      alpha(1), a small positive number so that 1 / alpha stays finite

Schedules
  loglinear  alpha(t) = 1 - (1 - eps) t. Called "log-linear" after MDLM (Sahoo et al. 2024),
             where the total noise sigma(t) = -log alpha(t) = -log(1 - (1 - eps) t).
  cosine     alpha(t) = eps + (1 - eps) cos(pi t / 2)  (flat near t = 0, steep near t = 1).

Both functions take a tensor (any shape) or a Python number and return a tensor of the same
shape: the same dtype for floating tensors, float64 otherwise.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

TimeFn = Callable[[Tensor | float], Tensor]


def _as_tensor(t: Tensor | float) -> Tensor:
    if not isinstance(t, Tensor):
        return torch.tensor(float(t), dtype=torch.float64)  # Python floats are float64
    return t if t.is_floating_point() else t.to(torch.float64)


@dataclass(frozen=True)
class Schedule:
    """A named noise schedule: `alpha(t)` and `dalpha(t)` = d alpha / d t."""

    name: str
    eps: float
    alpha: TimeFn
    dalpha: TimeFn


def loglinear_alpha(t: Tensor | float, eps: float) -> Tensor:
    t = _as_tensor(t)
    return 1.0 - (1.0 - eps) * t


def loglinear_dalpha(t: Tensor | float, eps: float) -> Tensor:
    t = _as_tensor(t)
    return torch.full_like(t, -(1.0 - eps))


def cosine_alpha(t: Tensor | float, eps: float) -> Tensor:
    t = _as_tensor(t)
    return eps + (1.0 - eps) * torch.cos(0.5 * math.pi * t)


def cosine_dalpha(t: Tensor | float, eps: float) -> Tensor:
    t = _as_tensor(t)
    return -(1.0 - eps) * 0.5 * math.pi * torch.sin(0.5 * math.pi * t)


_REGISTRY: dict[str, tuple[Callable[[Tensor | float, float], Tensor], Callable[[Tensor | float, float], Tensor]]] = {
    "loglinear": (loglinear_alpha, loglinear_dalpha),
    "cosine": (cosine_alpha, cosine_dalpha),
}

SCHEDULES: tuple[str, ...] = tuple(_REGISTRY)


def get_schedule(name: str, eps: float = 1e-3) -> Schedule:
    """The schedule called `name` (one of SCHEDULES) with alpha(1) = eps, 0 < eps < 1."""
    if name not in _REGISTRY:
        raise ValueError(f"unknown schedule {name!r}; expected one of {', '.join(SCHEDULES)}")
    if not 0.0 < eps < 1.0:
        raise ValueError(f"schedule eps must be in (0, 1), got {eps}")
    alpha_fn, dalpha_fn = _REGISTRY[name]

    def alpha(t: Tensor | float) -> Tensor:
        return alpha_fn(t, eps)

    def dalpha(t: Tensor | float) -> Tensor:
        return dalpha_fn(t, eps)

    return Schedule(name=name, eps=eps, alpha=alpha, dalpha=dalpha)
