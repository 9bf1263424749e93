"""engine.sampler: transitions, hard pins at every step, determinism, resume, edits, bad input."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from torch import nn

from engine.config import DiffusionConfig, SamplerConfig
from engine.diffusion import Diffusion, UniformDiffusion, make_diffusion
from engine.sampler import (
    ConstraintError,
    Step,
    apply_edit,
    edit_step,
    lock_term,
    resume_from,
    sample,
    shape_x0,
    step_seed,
    time_grid,
    validate_pins,
)

V = 11
MASK = V - 1
NOISES = ["uniform", "absorbing"]


def make(noise: str, vocab: int = V) -> Diffusion:
    return make_diffusion(DiffusionConfig(noise=noise, schedule="cosine"), vocab, vocab - 1 if noise == "absorbing" else None)


class FakeDenoiser(nn.Module):
    """Random-but-deterministic logits from seeded embeddings of x_t (and its left neighbour).
    Records every call: (x_t, t, clean, inference mode on?)."""

    def __init__(self, vocab: int = V, seed: int = 0) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.here = nn.Embedding(vocab, vocab)
        self.left = nn.Embedding(vocab, vocab)
        with torch.no_grad():
            self.here.weight.copy_(2 * torch.randn(vocab, vocab, generator=g))
            self.left.weight.copy_(torch.randn(vocab, vocab, generator=g))
        self.u = nn.Parameter(torch.randn(vocab, generator=g))
        self.calls: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor, bool]] = []

    def forward(self, x_t: torch.Tensor, t: torch.Tensor, clean: torch.Tensor) -> torch.Tensor:
        self.calls.append((x_t.clone(), t.clone(), clean.clone(), torch.is_inference_mode_enabled()))
        return self.here(x_t) + 0.5 * self.left(torch.roll(x_t, 1, dims=1)) + t[:, None, None] * self.u + 0.3 * clean[..., None]


class ConstantDenoiser(nn.Module):
    """The same x̂0 at every position and time."""

    def __init__(self, logits: torch.Tensor) -> None:
        super().__init__()
        self.logits = logits

    def forward(self, x_t: torch.Tensor, t: torch.Tensor, clean: torch.Tensor) -> torch.Tensor:
        return self.logits.expand(x_t.shape + (self.logits.shape[-1],))


class SpyDiffusion:
    """Delegates to a real noise and records every posterior draw the sampler asks it for."""

    def __init__(self, inner: Diffusion) -> None:
        self.inner = inner
        self.records: list[tuple[torch.Tensor, torch.Tensor, float, float, torch.Tensor]] = []

    def __getattr__(self, name: str):
        return getattr(self.inner, name)

    def sample_posterior(self, z, x0_weights, t, s, generator):
        x0_probs = (x0_weights / x0_weights.sum(-1, keepdim=True)).double()
        out = self.inner.posterior(z[None], x0_probs[None], torch.tensor([t]), torch.tensor([s]))[0]
        self.records.append((z.clone(), x0_probs, float(t), float(s), out))
        return self.inner.sample_posterior(z, x0_weights, t, s, generator)


def run(model, diffusion, cfg: SamplerConfig, **kw) -> list[Step]:
    return list(sample(model, diffusion, cfg, **kw))


def same_runs(a: list[Step], b: list[Step]) -> bool:
    return len(a) == len(b) and all(x.same_as(y) for x, y in zip(a, b))


def brute_posterior(d: Diffusion, z: int, x0_probs: torch.Tensor, t: float, s: float) -> torch.Tensor:
    """p(x_s | x_t = z) from explicit transition matrices and Bayes' rule, summed over x0 ~ x̂0."""
    n = d.vocab_size
    a_t, a_s = float(d.schedule.alpha(t)), float(d.schedule.alpha(s))
    eye = torch.eye(n, dtype=torch.float64)
    if isinstance(d, UniformDiffusion):
        target = torch.full((n, n), 1.0 / n, dtype=torch.float64)
    else:
        target = torch.zeros(n, n, dtype=torch.float64)
        target[:, d.mask_id] = 1.0
    Q_s = a_s * eye + (1 - a_s) * target
    Q_ts = (a_t / a_s) * eye + (1 - a_t / a_s) * target
    joint = (x0_probs[:, None] * Q_s).sum(0) * Q_ts[:, z]  # (n,) over x_s
    return joint / joint.sum()


# ----- one transition --------------------------------------------------------------------------
@pytest.mark.parametrize("noise", NOISES)
def test_transition_is_the_analytic_posterior(noise: str) -> None:
    vocab = 5
    inner = make(noise, vocab)
    logits = torch.randn(vocab, generator=torch.Generator().manual_seed(0)) * 1.5
    x0hat = torch.softmax(inner.masked_logits(logits).double(), -1)
    model = ConstantDenoiser(logits)
    S, L = 4, 300
    z = torch.arange(L) % vocab  # every value of x_t, 60 times
    start = Step(1, time_grid(S)[1], z, torch.zeros(L), torch.zeros(L, dtype=torch.bool), torch.zeros(L, dtype=torch.bool), S)
    counts = torch.zeros(vocab, vocab)  # (x_t value, x_s value)
    spy = SpyDiffusion(inner)
    for seed in range(40):
        step = next(sample(model, spy, SamplerConfig(steps=S, seed=seed), start=start))
        assert step.index == 2
        counts.index_put_((z, step.tokens), torch.ones(L), accumulate=True)
    t, s = time_grid(S)[1], time_grid(S)[2]
    for x_t, probs, tt, ss, out in spy.records:
        assert (tt, ss) == (t, s)
        torch.testing.assert_close(probs, x0hat.expand(L, vocab), rtol=1e-5, atol=1e-7)
        torch.testing.assert_close(out.sum(-1), torch.ones_like(out.sum(-1)))
        assert bool((out >= 0).all())
    for zi in range(vocab):
        want = brute_posterior(inner, zi, x0hat, t, s)
        # x̂0 reaches the draw in float32 (the sampler's precision); the posterior maths is float64
        torch.testing.assert_close(spy.records[0][4][zi], want, rtol=1e-5, atol=1e-7)  # row zi has x_t = zi
        n = float(counts[zi].sum())
        sd = (n * want * (1 - want)).sqrt()
        assert bool(((counts[zi].double() - n * want).abs() <= 5 * sd + 1).all()), (zi, counts[zi], n * want)


@pytest.mark.parametrize("noise", NOISES)
def test_sample_posterior_draws_from_the_posterior_for_unnormalised_weights(noise: str) -> None:
    """The sampler's fast draw (a mixture, never building the (n, V) posterior) has the
    frequencies of `posterior`, row by row, for x̂0 given only up to a factor per row."""
    vocab, n, draws = 6, 12, 4000
    d = make(noise, vocab)
    g = torch.Generator().manual_seed(3)
    probs = torch.softmax(d.masked_logits(torch.randn(n, vocab, generator=g) * 2), -1)  # (n, V)
    weights = probs * torch.rand(n, 1, generator=g).add(0.5) * 7  # any positive factor per row
    if noise == "absorbing":
        z = torch.where(torch.arange(n) % 3 == 0, torch.arange(n) % vocab, torch.full((n,), d.mask_id))
    else:
        z = torch.arange(n) % vocab
    t, s = 0.7, 0.45
    want = d.posterior(z[None], probs.double()[None], torch.tensor([t]), torch.tensor([s]))[0]  # (n, V)
    counts = torch.zeros(n, vocab, dtype=torch.float64)
    for _ in range(draws):
        x_s = d.sample_posterior(z, weights, t, s, g)
        counts[torch.arange(n), x_s] += 1
    sd = (draws * want * (1 - want)).sqrt()
    assert bool(((counts - draws * want).abs() <= 5 * sd + 2).all()), (counts / draws - want).abs().max()
    assert bool((counts[want == 0] == 0).all())  # impossible values are never drawn


# ----- pins are hard, every step (property-based) ----------------------------------------------
@st.composite
def scenarios(draw):
    L = draw(st.integers(1, 14))
    S = draw(st.integers(1, 6))
    positions = draw(st.sets(st.integers(0, L - 1), max_size=L))
    pins = {p: draw(st.integers(0, V - 2)) for p in sorted(positions)}
    noise = draw(st.sampled_from(NOISES))
    seed = draw(st.integers(0, 2**31 - 1))
    start = draw(st.integers(0, L))
    end = draw(st.integers(start, L))
    new_ids = draw(st.lists(st.integers(0, V - 2), max_size=4))
    at = draw(st.integers(0, S))
    greedy = draw(st.booleans())
    top_p = draw(st.sampled_from([1.0, 0.9, 0.3]))
    temperature = draw(st.sampled_from([1.0, 0.5, 2.0, 0.0]))
    return L, S, pins, noise, seed, (start, end, new_ids), at, SamplerConfig(steps=S, seed=seed, greedy_last=greedy, top_p=top_p, temperature=temperature)


def check_steps(steps: list[Step], pins: dict[int, int], L: int, S: int, first: int) -> None:
    assert [s.index for s in steps] == list(range(first, S + 1))
    prev = None
    for s in steps:
        assert s.total_steps == S and s.t == pytest.approx(1 - s.index / S)
        assert s.tokens.shape == (L,) and s.confidence.shape == (L,)
        want_pinned = torch.zeros(L, dtype=torch.bool)
        for p, v in pins.items():
            assert int(s.tokens[p]) == v, f"pin {p}={v} changed at step {s.index}"
            want_pinned[p] = True
        assert torch.equal(s.pinned, want_pinned)
        assert bool((s.confidence[want_pinned] == 1.0).all()) and not bool(s.changed[want_pinned].any())
        assert bool(((s.confidence >= 0) & (s.confidence <= 1)).all())
        if prev is not None:
            assert torch.equal(s.changed, s.tokens != prev.tokens)
        prev = s


def check_calls(model: FakeDenoiser, pins: dict[int, int]) -> None:
    for x_t, t, clean, inference in model.calls:
        assert inference
        assert x_t.shape[0] == 1 and clean.shape == x_t.shape
        for p, v in pins.items():
            assert int(x_t[0, p]) == v and bool(clean[0, p])
        assert int(clean.sum()) == len(pins)


@settings(max_examples=50, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(scenarios())
def test_pins_hold_at_every_step_and_edits_shift_them(scenario) -> None:
    L, S, pins, noise, seed, (start, end, new_ids), at, cfg = scenario
    diffusion = make(noise)
    model = FakeDenoiser(seed=seed % 7)
    steps = run(model, diffusion, cfg, length=L, pins=pins)
    check_steps(steps, pins, L, S, first=0)
    check_calls(model, pins)
    assert same_runs(steps, run(FakeDenoiser(seed=seed % 7), diffusion, cfg, length=L, pins=pins))

    # resume from a recorded step with the same pins: the rest of the run is reproduced
    assert same_runs(run(model, diffusion, cfg, pins=pins, start=steps[at]), steps[at + 1 :])

    # an edit at that step: either rejected (and nothing changes) or pins shift with the tokens
    before = (steps[at].tokens.clone(), dict(pins))
    overlaps = any(start <= p < end for p in pins)
    if overlaps:
        with pytest.raises(ConstraintError, match="overlaps pinned"):
            edit_step(steps[at], pins, start, end, new_ids)
        assert torch.equal(steps[at].tokens, before[0]) and pins == before[1]
        return
    edited, new_pins = edit_step(steps[at], pins, start, end, new_ids)
    delta = len(new_ids) - (end - start)
    old = steps[at].tokens.tolist()
    assert edited.tokens.tolist() == old[:start] + list(new_ids) + old[end:]
    assert new_pins == {**{(p if p < start else p + delta): v for p, v in pins.items()}, **{start + i: v for i, v in enumerate(new_ids)}}
    for p, v in new_pins.items():
        assert int(edited.tokens[p]) == v
    assert edited.index == steps[at].index and edited.length == L + delta
    if edited.length == 0:
        with pytest.raises(ValueError, match="no tokens"):
            sample(model, diffusion, cfg, pins=new_pins, start=edited)
        return
    model.calls.clear()
    resumed = run(model, diffusion, cfg, pins=new_pins, start=edited)
    check_steps(resumed, new_pins, L + delta, S, first=at + 1)
    check_calls(model, new_pins)


# ----- determinism and resume ------------------------------------------------------------------
@pytest.mark.parametrize("noise", NOISES)
def test_same_seed_same_run_other_seed_other_run(noise: str) -> None:
    d = make(noise)
    pins = {0: 3, 5: 7}
    a = run(FakeDenoiser(), d, SamplerConfig(steps=8, seed=1), length=12, pins=pins)
    b = run(FakeDenoiser(), d, SamplerConfig(steps=8, seed=1), length=12, pins=pins)
    c = run(FakeDenoiser(), d, SamplerConfig(steps=8, seed=2), length=12, pins=pins)
    assert same_runs(a, b)
    assert not all(torch.equal(x.tokens, y.tokens) for x, y in zip(a, c))
    assert a[0].t == 1.0 and a[-1].t == 0.0 and a[-1].done
    assert len({step_seed(1, k) for k in range(100)} | {step_seed(2, k) for k in range(100)}) == 200


@pytest.mark.parametrize("noise", NOISES)
def test_resume_from_every_step_reproduces_the_run(noise: str) -> None:
    d = make(noise)
    cfg = SamplerConfig(steps=6, seed=4, top_p=0.9, temperature=0.8)
    pins = {2: 1, 3: 4}
    steps = run(FakeDenoiser(), d, cfg, length=10, pins=pins)
    for k, step in enumerate(steps):
        assert same_runs(run(FakeDenoiser(), d, cfg, pins=pins, start=step), steps[k + 1 :])
    assert run(FakeDenoiser(), d, cfg, pins=pins, start=steps[-1]) == []


@pytest.mark.parametrize("noise", NOISES)
def test_resume_with_new_pins_keeps_them(noise: str) -> None:
    d = make(noise)
    cfg = SamplerConfig(steps=6, seed=0)
    steps = run(FakeDenoiser(), d, cfg, length=10, pins={0: 1})
    new_pins = {4: 9, 5: 2}  # the old pin is released, two new ones
    start = resume_from(steps[2], steps[2].tokens, new_pins)
    assert start.index == 2 and int(start.tokens[4]) == 9 and bool(start.pinned[5]) and not bool(start.pinned[0])
    rest = run(FakeDenoiser(), d, cfg, pins=new_pins, start=start)
    check_steps(rest, new_pins, 10, 6, first=3)
    # resuming from the raw step with the new pins is the same: pins are written in before the first call
    assert same_runs(rest, run(FakeDenoiser(), d, cfg, pins=new_pins, start=steps[2]))


def test_resume_after_a_length_change() -> None:
    d = make("uniform")
    cfg = SamplerConfig(steps=5, seed=3)
    steps = run(FakeDenoiser(), d, cfg, length=8, pins={7: 2})
    tokens, pins = apply_edit(steps[2].tokens, {7: 2}, 1, 3, [5, 5, 5, 5])
    assert pins == {1: 5, 2: 5, 3: 5, 4: 5, 9: 2} and tokens.shape == (10,)
    start = dataclasses.replace(steps[2], tokens=tokens)  # the same as resume_from(...), minus bookkeeping
    a = run(FakeDenoiser(), d, cfg, pins=pins, start=start)
    b = run(FakeDenoiser(), d, cfg, pins=pins, start=resume_from(steps[2], tokens, pins))
    check_steps(a, pins, 10, 5, first=3)
    assert same_runs(a, b)
    with pytest.raises(ValueError, match="does not match"):
        sample(FakeDenoiser(), d, cfg, length=8, pins=pins, start=start)


# ----- last step, top-p, temperature -----------------------------------------------------------
def x0_probs(model: nn.Module, d: Diffusion, tokens: torch.Tensor, t: float, clean: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        logits = model(tokens[None], torch.tensor([t]), clean[None])[0]
    return torch.softmax(d.masked_logits(logits).double(), -1)  # (L, V)


@pytest.mark.parametrize("noise", NOISES)
def test_greedy_last_step_writes_argmax(noise: str) -> None:
    d = make(noise)
    model = FakeDenoiser(seed=5)
    pins = {1: 3}
    steps = run(model, d, SamplerConfig(steps=4, seed=0, greedy_last=True), length=12, pins=pins)
    prev, last = steps[-2], steps[-1]
    p = x0_probs(model, d, prev.tokens, prev.t, prev.pinned)
    want = p.argmax(-1)
    if noise == "absorbing":
        want = torch.where(prev.tokens != MASK, prev.tokens, want)  # unmasked tokens are decided
    want[1] = 3
    assert torch.equal(last.tokens, want)
    free = ~last.pinned
    torch.testing.assert_close(last.confidence[free], p[free].gather(1, last.tokens[free, None])[:, 0].float())
    assert not bool((last.tokens == MASK).any())


@pytest.mark.parametrize("noise", NOISES)
@pytest.mark.parametrize("knob", [{"top_p": 1e-9}, {"temperature": 0.0}])
def test_tiny_top_p_or_zero_temperature_is_argmax(noise: str, knob: dict) -> None:
    d = SpyDiffusion(make(noise))
    model = FakeDenoiser(seed=6)
    cfg = SamplerConfig(steps=5, seed=0, greedy_last=False, **knob)
    steps = run(model, d, cfg, length=9)
    for _, probs, _, _, _ in d.records:
        assert bool(((probs == 0) | (probs == 1)).all()) and bool((probs.sum(-1) == 1).all())
    prev, last = steps[-2], steps[-1]
    want = x0_probs(model, d.inner, prev.tokens, prev.t, prev.pinned).argmax(-1)
    if noise == "absorbing":
        want = torch.where(prev.tokens != MASK, prev.tokens, want)
    assert torch.equal(last.tokens, want)  # the s = 0 posterior of a point-mass x̂0 is that point


def test_shape_x0_temperature_and_top_p() -> None:
    p = torch.tensor([[0.5, 0.3, 0.15, 0.05, 0.0]], dtype=torch.float64)
    torch.testing.assert_close(shape_x0(p), p)
    hot = p.pow(2) / p.pow(2).sum()
    torch.testing.assert_close(shape_x0(p, temperature=0.5), hot)
    flat = p.sqrt() / p.sqrt().sum()
    torch.testing.assert_close(shape_x0(p, temperature=2.0), flat)
    assert torch.equal(shape_x0(p, temperature=0.0), torch.tensor([[1.0, 0, 0, 0, 0]], dtype=torch.float64))
    torch.testing.assert_close(shape_x0(p, top_p=0.75), torch.tensor([[0.625, 0.375, 0, 0, 0]], dtype=torch.float64))
    torch.testing.assert_close(shape_x0(p, top_p=0.8), torch.tensor([[0.625, 0.375, 0, 0, 0]], dtype=torch.float64))
    torch.testing.assert_close(shape_x0(p, top_p=0.81), torch.tensor([[0.5, 0.3, 0.15, 0, 0]], dtype=torch.float64) / 0.95)
    assert torch.equal(shape_x0(p, top_p=1e-9), shape_x0(p, temperature=0.0))
    assert float(shape_x0(p, temperature=3.0)[0, 4]) == 0.0  # zero mass stays zero


def test_temperature_changes_the_run_and_low_temperature_sharpens_it() -> None:
    d = make("uniform")
    model = FakeDenoiser(seed=2)

    def mean_confidence(temp: float) -> float:
        vals = [float(run(model, d, SamplerConfig(steps=4, seed=s, temperature=temp, greedy_last=False), length=16)[-1].confidence.mean()) for s in range(6)]
        return sum(vals) / len(vals)

    assert mean_confidence(0.3) > mean_confidence(3.0)


# ----- the model interface ---------------------------------------------------------------------
class FeatureDenoiser(FakeDenoiser):
    """Exposes features/head; records how many rows the head was asked for."""

    def __init__(self) -> None:
        super().__init__(seed=1)
        self.head_rows: list[int] = []

    def features(self, x_t, t, clean):
        return super().forward(x_t, t, clean)  # (1, L, V) used as D = V features

    def head(self, h):
        self.head_rows.append(h.shape[0])
        return h


def test_features_head_path_asks_only_for_free_positions() -> None:
    d = make("uniform")
    pins = {0: 1, 1: 2, 6: 3}
    cfg = SamplerConfig(steps=3, seed=0)
    fm = FeatureDenoiser()
    a = run(fm, d, cfg, length=9, pins=pins)
    assert fm.head_rows == [6, 6, 6]
    plain = FakeDenoiser(seed=1)
    assert same_runs(a, run(plain, d, cfg, length=9, pins=pins))


def test_plain_callable_denoiser_and_clean_extra() -> None:
    d = make("uniform")
    calls = []

    def model(x_t, t, clean):
        calls.append(clean.clone())
        return torch.zeros(x_t.shape + (V,))

    cfg = SamplerConfig(steps=3, seed=0)
    steps = run(model, d, cfg, length=6)
    extra = torch.tensor([True, False, False, True, False, False])
    rest = run(model, d, cfg, pins={1: 4}, start=steps[1], clean_extra=extra)
    for s in rest:
        assert int(s.tokens[0]) == int(steps[1].tokens[0]) and int(s.tokens[3]) == int(steps[1].tokens[3])
        assert int(s.tokens[1]) == 4 and s.pinned.tolist() == [True, True, False, True, False, False]
    assert calls[-1][0].tolist() == [True, True, False, True, False, False]
    with pytest.raises(ValueError, match="clean_extra"):
        sample(model, d, cfg, length=6, clean_extra=extra)


# ----- edits, locks, bad input -----------------------------------------------------------------
def test_apply_edit_replace_insert_delete() -> None:
    tokens = torch.tensor([0, 1, 2, 3, 4, 5])
    pins = {0: 0, 4: 4}
    t1, p1 = apply_edit(tokens, pins, 1, 3, [9])  # replace two by one
    assert t1.tolist() == [0, 9, 3, 4, 5] and p1 == {0: 0, 1: 9, 3: 4}
    t2, p2 = apply_edit(tokens, pins, 4, 4, [7, 8])  # insert before the pin at 4
    assert t2.tolist() == [0, 1, 2, 3, 7, 8, 4, 5] and p2 == {0: 0, 4: 7, 5: 8, 6: 4}
    t3, p3 = apply_edit(tokens, pins, 1, 4, [])  # delete
    assert t3.tolist() == [0, 4, 5] and p3 == {0: 0, 1: 4}
    t4, p4 = apply_edit(tokens, pins, 6, 6, [1])  # append
    assert t4.tolist() == [0, 1, 2, 3, 4, 5, 1] and p4 == {0: 0, 4: 4, 6: 1}
    assert tokens.tolist() == [0, 1, 2, 3, 4, 5] and pins == {0: 0, 4: 4}


@pytest.mark.parametrize(
    ("start", "end", "message"),
    [(3, 5, r"overlaps pinned position\(s\) \[4\]"), (4, 2, "after its end"), (-1, 2, "outside the sequence"), (5, 7, "outside the sequence")],
)
def test_bad_edits_raise_and_change_nothing(start: int, end: int, message: str) -> None:
    tokens = torch.tensor([0, 1, 2, 3, 4, 5])
    pins = {0: 0, 4: 4}
    with pytest.raises(ConstraintError, match=message):
        apply_edit(tokens, pins, start, end, [1])
    assert tokens.tolist() == [0, 1, 2, 3, 4, 5] and pins == {0: 0, 4: 4}
    assert issubclass(ConstraintError, ValueError)


def test_lock_term_pins_every_occurrence() -> None:
    tokens = torch.tensor([1, 2, 3, 1, 2, 1, 2, 2])
    assert lock_term(tokens, {0: 1}, [1, 2]) == {0: 1, 1: 2, 3: 1, 4: 2, 5: 1, 6: 2}
    assert lock_term(tokens, {}, [2, 2]) == {6: 2, 7: 2}
    assert lock_term(tokens, {2: 3}, [9]) == {2: 3}
    with pytest.raises(ConstraintError, match="conflicts"):
        lock_term(tokens, {1: 5}, [1, 2])
    with pytest.raises(ConstraintError, match="empty"):
        lock_term(tokens, {}, [])


def test_bad_input_raises_clear_errors() -> None:
    d = make("uniform")
    model = FakeDenoiser()
    with pytest.raises(ConstraintError, match=r"position 10 is outside the sequence \(positions 0..9\)"):
        sample(model, d, SamplerConfig(), length=10, pins={10: 1})
    with pytest.raises(ConstraintError, match="outside the vocabulary"):
        sample(model, d, SamplerConfig(), length=10, pins={3: V})
    with pytest.raises(ConstraintError, match="outside the sequence"):
        validate_pins({-1: 0}, 5)
    with pytest.raises(ValueError, match="steps must be an integer >= 1"):
        sample(model, d, SamplerConfig(steps=0), length=4)
    with pytest.raises(ValueError, match="free_steps must be an integer >= 1"):
        sample(model, d, SamplerConfig(free_steps=0), length=4)
    with pytest.raises(ValueError, match="top_p"):
        sample(model, d, SamplerConfig(top_p=0.0), length=4)
    with pytest.raises(ValueError, match="temperature"):
        sample(model, d, SamplerConfig(temperature=-1.0), length=4)
    with pytest.raises(ValueError, match="length"):
        sample(model, d, SamplerConfig(), length=0)
    with pytest.raises(ValueError, match="length"):
        sample(model, d, SamplerConfig())
    steps = run(model, d, SamplerConfig(steps=3), length=4)
    with pytest.raises(ValueError, match="run of 3 steps"):
        sample(model, d, SamplerConfig(steps=4), start=steps[1])
    assert len(model.calls) == 3  # nothing ran for the rejected calls


def test_step_zero_already_has_the_pins_and_confidence_convention() -> None:
    for noise in NOISES:
        steps = run(FakeDenoiser(), make(noise), SamplerConfig(steps=2), length=7, pins={3: 5})
        s0 = steps[0]
        assert s0.index == 0 and s0.t == 1.0 and int(s0.tokens[3]) == 5
        assert s0.confidence.tolist() == [0, 0, 0, 1, 0, 0, 0] and not bool(s0.changed.any())
        if noise == "absorbing":
            assert (s0.tokens == MASK).sum() == 6
