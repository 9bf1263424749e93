"""engine.schedule: endpoints, monotonicity, derivative against autograd, the registry."""

from __future__ import annotations

import pytest
import torch

from engine.schedule import SCHEDULES, get_schedule


@pytest.mark.parametrize("name", SCHEDULES)
@pytest.mark.parametrize("eps", [1e-3, 0.05])
def test_endpoints_and_monotone(name: str, eps: float) -> None:
    s = get_schedule(name, eps)
    assert s.name == name and s.eps == eps
    assert float(s.alpha(0.0)) == 1.0
    assert float(s.alpha(1.0)) == pytest.approx(eps, abs=1e-12)
    t = torch.linspace(0, 1, 2001, dtype=torch.float64)
    a = s.alpha(t)
    assert a.shape == t.shape and a.dtype == torch.float64
    assert torch.all(a[1:] < a[:-1]), "alpha must be strictly decreasing"
    assert torch.all((a >= eps - 1e-12) & (a <= 1.0))
    assert torch.all(s.dalpha(t[1:]) < 0)


@pytest.mark.parametrize("name", SCHEDULES)
def test_dalpha_matches_autograd(name: str) -> None:
    s = get_schedule(name, 1e-3)
    t = torch.rand(257, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    t = torch.cat([t, torch.tensor([0.0, 0.5, 1.0], dtype=torch.float64)]).requires_grad_(True)
    (grad,) = torch.autograd.grad(s.alpha(t).sum(), t)
    torch.testing.assert_close(s.dalpha(t.detach()), grad, rtol=1e-12, atol=1e-12)


def test_float_and_float32_inputs() -> None:
    s = get_schedule("cosine", 1e-3)
    assert s.alpha(torch.tensor([0.25], dtype=torch.float32)).dtype == torch.float32
    assert s.dalpha(0.3).shape == ()


def test_bad_names_and_eps() -> None:
    with pytest.raises(ValueError, match="unknown schedule 'linear'"):
        get_schedule("linear")
    with pytest.raises(ValueError, match="eps"):
        get_schedule("cosine", 0.0)
