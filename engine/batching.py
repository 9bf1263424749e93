"""Continuous batching of denoiser calls: the steps of many concurrent sampler runs in one forward.

Each sampler run (engine.sampler.sample) calls its denoiser once per step, from its own thread.
A `Batcher` stands in for the model: a call of `features` waits while one worker thread stacks
the calls waiting at that moment into one forward and hands each caller its row. Runs join and
leave between any two steps; nothing about a run (seed, pins, step count, length) is shared, so
each run's steps are exactly those it gives alone (the sampler draws its randomness per run and
step, and reads nothing of the model but its own row).

Glossary
  call        one sequence's denoiser call: x (1, L) ids, t (1,), clean (1, L) bool
  group       waiting calls of the same length, dtype and device: they can be stacked
  chunk       at most max(1, max_tokens // L) calls of a group: one forward (B, L)
  alone       a call run by itself in its caller's thread, exactly as without the batcher
  gather      when the worker is free and calls wait, it waits up to `gather_s` more while fewer
              calls wait than threads called in the last `recent_s`: the runs' threads come back
              from their own work between steps at different moments, and without this they
              would settle into several small batches in turn instead of one large one

Why rows are exact (checked by tests/test_batching.py on the machine that runs them): the
SFDLM mixes positions only along the sequence of each row (the SSM and Fourier MLP transform
each row's channels separately, the channel MLP and norms work per position, the time
conditioning per row; engine.layers.per_row runs its small (B, D) products row by row), and
CPU GEMMs over (B * L) rows give each row what (L) rows give when L is not tiny. Two limits keep
it so:
  min_length  shorter sequences run alone: with under a dozen rows a GEMM takes small-matrix
              kernels whose rounding differs from those of a larger product (measured: lengths
              1-3, 5-7 and 9-11 differ in the last bits, 12 and over are exact)
  max_tokens  at most this many tokens (B * L) per forward: beyond it the layers switch to their
              long-input paths (the Fourier MLP's blocks a few at a time, the SSM's channel
              groups), whose elementwise passes split differently from one sequence's
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field

import torch
from torch import Tensor, nn

MIN_LENGTH = 16
MAX_TOKENS = 4096
GATHER_S = 0.02
RECENT_S = 0.5


@dataclass(eq=False)
class _Call:
    x: Tensor  # (1, L) long
    t: Tensor  # (1,)
    clean: Tensor  # (1, L) bool
    done: threading.Event = field(default_factory=threading.Event)
    out: Tensor | None = None  # (1, L, D)
    error: BaseException | None = None

    @property
    def key(self) -> tuple:
        return (self.x.shape[1], self.x.dtype, self.t.dtype, self.x.device)


@dataclass
class BatchStats:
    """Counters since the batcher was built (read them for benchmarks and the status line)."""

    forwards: int = 0  # forwards run by the worker
    calls: int = 0  # calls served by the worker (each is one step of one run)
    alone: int = 0  # calls run alone in their caller's thread (short, closed, or a batch that failed)
    largest: int = 0  # most calls in one forward
    busy_s: float = 0.0  # seconds the worker spent in forwards

    @property
    def mean_batch(self) -> float:
        return self.calls / self.forwards if self.forwards else 0.0


class Batcher:
    """A denoiser for engine.sampler.sample that batches the concurrent calls of many runs.

    Pass it where the sampler takes the model. `features` (called by the sampler once per step)
    waits for the worker; `head` and `parameters` are the model's. Build it once per process
    (it starts one daemon thread) and `close` it when done: calls made after that run alone.
    A forward that raises is run again call by call, so an error reaches only the caller whose
    input caused it."""

    def __init__(self, model: nn.Module, *, max_tokens: int = MAX_TOKENS, min_length: int = MIN_LENGTH,
                 gather_s: float = GATHER_S, name: str = "denoiser-batcher") -> None:
        if max_tokens < 1 or min_length < 1:
            raise ValueError(f"max_tokens and min_length must be >= 1, got {max_tokens}, {min_length}")
        self.model = model
        self.max_tokens = max_tokens
        self.min_length = min_length
        self.gather_s = gather_s
        self._callers: dict[int, float] = {}  # thread id -> when it last called
        self.stats = BatchStats()
        self._waiting: list[_Call] = []
        self._cv = threading.Condition()
        self._closed = False
        self._thread = threading.Thread(target=self._loop, name=name, daemon=True)
        self._thread.start()

    # -- what the sampler calls -------------------------------------------------------------
    def features(self, x: Tensor, t: Tensor, clean: Tensor) -> Tensor:
        """(1, L, D) features of one sequence, computed in a batch with the calls waiting now."""
        if x.dim() != 2 or x.shape[0] != 1 or x.shape[1] < self.min_length:
            return self._alone(x, t, clean)
        call = _Call(x, t, clean)
        with self._cv:
            if self._closed:
                call = None
            else:
                self._waiting.append(call)
                self._callers[threading.get_ident()] = time.monotonic()
                self._cv.notify()
        if call is None:
            return self._alone(x, t, clean)
        call.done.wait()
        if call.error is not None:
            raise call.error
        assert call.out is not None
        return call.out

    def head(self, h: Tensor) -> Tensor:
        return self.model.head(h)

    def parameters(self) -> Iterator[nn.Parameter]:
        return self.model.parameters()

    def __call__(self, x: Tensor, t: Tensor, clean: Tensor) -> Tensor:
        """Logits (B, L, V); one sequence at a time goes through the batch."""
        if x.shape[0] == 1:
            return self.head(self.features(x, t, clean))
        return self.model(x, t, clean)

    @property
    def waiting(self) -> int:
        """Calls waiting for the next forward."""
        with self._cv:
            return len(self._waiting)

    def close(self, timeout: float | None = 10.0) -> None:
        """Stop the worker after the calls already waiting are served; later calls run alone."""
        with self._cv:
            self._closed = True
            self._cv.notify_all()
        if self._thread is not threading.current_thread():
            self._thread.join(timeout)

    @property
    def alive(self) -> bool:
        return self._thread.is_alive()

    # -- the worker ---------------------------------------------------------------------------
    def _alone(self, x: Tensor, t: Tensor, clean: Tensor) -> Tensor:
        with self._cv:
            self.stats.alone += 1
        with torch.inference_mode():
            return self.model.features(x, t, clean)

    def _loop(self) -> None:
        while True:
            with self._cv:
                while not self._waiting and not self._closed:
                    self._cv.wait()
                if not self._waiting:  # closed and drained
                    return
                self._gather()
                calls, self._waiting = self._waiting, []
            groups: dict[tuple, list[_Call]] = {}
            for c in calls:
                groups.setdefault(c.key, []).append(c)
            for group in groups.values():
                rows = max(1, self.max_tokens // group[0].x.shape[1])
                for i in range(0, len(group), rows):
                    self._run(group[i:i + rows])

    def _gather(self) -> None:
        """(lock held, calls waiting) Wait up to gather_s while fewer calls wait than recent callers."""
        now = time.monotonic()
        self._callers = {k: v for k, v in self._callers.items() if now - v < RECENT_S}
        deadline = now + self.gather_s
        while not self._closed and len(self._waiting) < len(self._callers):
            left = deadline - time.monotonic()
            if left <= 0:
                return
            self._cv.wait(left)

    def _run(self, chunk: list[_Call]) -> None:
        t0 = time.perf_counter()
        try:
            with torch.inference_mode():
                if len(chunk) == 1:
                    c = chunk[0]
                    outs = [self.model.features(c.x, c.t, c.clean)]
                else:
                    h = self.model.features(torch.cat([c.x for c in chunk]), torch.cat([c.t for c in chunk]),
                                            torch.cat([c.clean for c in chunk]))  # (B, L, D)
                    outs = [h[i:i + 1].clone() for i in range(len(chunk))]  # own storage: the batch is freed
        except Exception as exc:  # noqa: BLE001 - one bad call must not fail the others: run each alone
            if len(chunk) > 1:
                for c in chunk:
                    self._run([c])
                return
            chunk[0].error = exc
            chunk[0].done.set()
            return
        with self._cv:
            self.stats.forwards += 1
            self.stats.calls += len(chunk)
            self.stats.largest = max(self.stats.largest, len(chunk))
            self.stats.busy_s += time.perf_counter() - t0
        for c, o in zip(chunk, outs):
            c.out = o
            c.done.set()

