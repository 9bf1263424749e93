"""engine.batching: concurrent sampler runs that share forwards get exactly the tokens each gets
alone; one failing call fails only its caller; the worker thread stops on close."""

from __future__ import annotations

import dataclasses
import threading
import time
from pathlib import Path

import pytest
import torch

from engine import checkpoint, sampler
from engine.batching import MAX_TOKENS, Batcher

ROOT = Path(__file__).resolve().parent.parent


class SlowModel:
    """The model with a pause in every forward, so that calls pile up while the worker is busy
    (every test below then really batches); `poison` ids make a forward raise."""

    def __init__(self, model: torch.nn.Module, delay_s: float = 0.01, poison: int | None = None) -> None:
        self.model, self.delay_s, self.poison = model, delay_s, poison
        self.batch_sizes: list[int] = []

    def features(self, x, t, clean):
        time.sleep(self.delay_s)
        if self.poison is not None and bool((x[:, 0] == self.poison).any()):
            raise ValueError("poisoned input")
        self.batch_sizes.append(int(x.shape[0]))
        return self.model.features(x, t, clean)

    def head(self, h):
        return self.model.head(h)

    def parameters(self):
        return self.model.parameters()


@pytest.fixture(scope="module")
def tiny(tiny_model_dir):
    ck = checkpoint.load(tiny_model_dir)
    ck.model.eval()
    return ck


# seed, length, steps, pins, the run it waits for and that run's step at which it joins
RUNS = [
    (11, 40, 12, {0: 5, 7: 9}, None, 0),
    (12, 40, 6, {}, 0, 2),  # joins at step 2 of run 0, leaves early
    (13, 64, 10, {3: 4}, 0, 4),  # another length: its own group
    (14, 20, 9, {19: 7}, 1, 1),
    (15, 40, 15, {10: 3, 11: 4}, 1, 2),  # joins while runs 0 and 1 still step: three rows of 40
    (16, 12, 7, {}, None, 0),  # shorter than min_length: runs alone
    (17, 100, 8, {50: 2}, 3, 2),
]


def _steps(model, ck, seed, length, steps, pins):
    cfg = dataclasses.replace(ck.sampler_cfg, seed=seed, steps=steps)
    return sampler.sample(model, ck.diffusion(), cfg, length=length, pins=pins)


def test_batched_runs_give_the_tokens_of_each_run_alone(tiny):
    alone = [[s.tokens for s in _steps(tiny.model, tiny, *r[:4])] for r in RUNS]
    slow = SlowModel(tiny.model, delay_s=0.02)
    batcher = Batcher(slow)
    reached = [threading.Event() for _ in RUNS for _ in range(32)]  # (run, step) -> event
    got: list[list[torch.Tensor] | None] = [None] * len(RUNS)
    errors: list[BaseException] = []

    def run(i: int) -> None:
        seed, length, steps, pins, after, at = RUNS[i]
        try:
            if after is not None:
                reached[after * 32 + at].wait(30)
            out = []
            for s in _steps(batcher, tiny, seed, length, steps, pins):
                out.append(s.tokens)
                reached[i * 32 + s.index].set()
            got[i] = out
        except BaseException as e:  # noqa: BLE001
            errors.append(e)
        finally:
            for k in range(32):  # never leave a waiting run behind
                reached[i * 32 + k].set()

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(RUNS))]
    for th in threads:
        th.start()
    for th in threads:
        th.join(60)
    batcher.close()
    assert not errors
    for i, (want, have) in enumerate(zip(alone, got)):
        assert have is not None and len(have) == len(want) == RUNS[i][2] + 1
        assert all(torch.equal(a, b) for a, b in zip(want, have)), f"run {i} differs"
    assert max(slow.batch_sizes) >= 3, "the runs never shared a forward"
    assert batcher.stats.alone >= RUNS[5][2]  # the short run's steps ran alone


def test_batched_features_equal_alone_across_lengths(tiny):
    m = tiny.model
    gen = torch.Generator().manual_seed(0)
    for length in (16, 17, 31, 64, 65, 200, 1000):
        n = max(2, min(6, 4096 // length))
        x = torch.randint(0, m.cfg.vocab_size, (n, length), generator=gen)
        t = torch.rand(n, generator=gen)
        clean = torch.rand(n, length, generator=gen) < 0.3
        with torch.inference_mode():
            both = m.features(x, t, clean)
            for i in range(n):
                assert torch.equal(both[i], m.features(x[i:i + 1], t[i:i + 1], clean[i:i + 1])[0]), (length, i)


@pytest.fixture(scope="module")
def shipped():
    return checkpoint.load(ROOT / "assets" / "model").model.eval()


def _rows_match(m, length: int, n: int, seed: int) -> None:
    gen = torch.Generator().manual_seed(seed)
    x = torch.randint(0, m.cfg.vocab_size, (n, length), generator=gen)
    t = torch.rand(n, generator=gen)
    clean = torch.rand(n, length, generator=gen) < 0.3
    with torch.inference_mode():
        both = m.features(x, t, clean)
        for i in sorted({0, n // 2, n - 1}):
            assert torch.equal(both[i], m.features(x[i:i + 1], t[i:i + 1], clean[i:i + 1])[0]), (length, n, i)


def test_shipped_model_rows_are_batch_invariant_at_a_template_length(shipped):
    _rows_match(shipped, 181, 4, 1)


@pytest.mark.slow
@pytest.mark.parametrize("length", [16, 60, 257, 700, 2048])
def test_shipped_model_rows_are_batch_invariant(shipped, length):
    """At lengths a draft can have, with the most rows a forward holds (engine.batching.MAX_TOKENS)."""
    _rows_match(shipped, length, max(2, MAX_TOKENS // length), length)


def test_a_failing_call_fails_only_its_caller(tiny):
    poison = 3
    slow = SlowModel(tiny.model, delay_s=0.02, poison=poison)
    batcher = Batcher(slow)
    gen = torch.Generator().manual_seed(2)
    inputs = []
    for i in range(6):
        x = torch.randint(4, tiny.model.cfg.vocab_size, (1, 32), generator=gen)
        if i == 2:
            x[0, 0] = poison
        inputs.append((x, torch.rand(1, generator=gen), torch.zeros(1, 32, dtype=torch.bool)))
    results: dict[int, object] = {}
    go = threading.Barrier(len(inputs))

    def call(i: int) -> None:
        go.wait()
        try:
            results[i] = batcher.features(*inputs[i])
        except ValueError as e:
            results[i] = e

    threads = [threading.Thread(target=call, args=(i,)) for i in range(len(inputs))]
    for th in threads:
        th.start()
    for th in threads:
        th.join(30)
    assert isinstance(results[2], ValueError)
    with torch.inference_mode():
        for i in (0, 1, 3, 4, 5):
            assert torch.equal(results[i], tiny.model.features(*inputs[i])), i
    # the worker survives: a later call is served by it
    served = batcher.stats.calls
    with torch.inference_mode():
        assert torch.equal(batcher.features(*inputs[0]), tiny.model.features(*inputs[0]))
    assert batcher.stats.calls == served + 1
    batcher.close()


def test_close_serves_waiting_calls_and_stops_the_thread(tiny):
    slow = SlowModel(tiny.model, delay_s=0.1)
    batcher = Batcher(slow)
    x = torch.randint(0, tiny.model.cfg.vocab_size, (1, 24))
    args = (x, torch.full((1,), 0.5), torch.zeros(1, 24, dtype=torch.bool))
    out: list[torch.Tensor] = []
    threads = [threading.Thread(target=lambda: out.append(batcher.features(*args))) for _ in range(3)]
    for th in threads:
        th.start()
    time.sleep(0.03)  # the first forward is running, the others wait
    batcher.close()
    for th in threads:
        th.join(10)
    assert not batcher.alive
    assert len(out) == 3
    with torch.inference_mode():
        want = tiny.model.features(*args)
    assert all(torch.equal(o, want) for o in out)
    calls = batcher.stats.calls
    assert torch.equal(batcher.features(*args), want)  # after close: alone, in the caller's thread
    assert batcher.stats.calls == calls and batcher.stats.alone == 1


def test_services_batch_drafts_and_stop_the_batcher(app_services):
    from app import draft
    from app.state import DraftState

    svc = app_services
    assert svc.batcher is not None and svc.batcher.alive
    ups = list(draft.generate(svc, "olga", DraftState(), template=draft.FREE_LENGTH, length=24, steps=5, seed=3,
                              temperature=1.0))
    assert ups[-1].kind == "ok", ups[-1].message
    assert svc.batcher.stats.calls == 5  # every step went through the batcher's worker
    svc.close()
    assert not svc.batcher.alive
