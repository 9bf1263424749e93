"""The constrained reverse process, as a generator of steps; pins and edits.

Glossary
  S          total reverse steps (cfg.steps);  k = 0..S the step index
  t_k        the time grid t_k = 1 - k / S: step 0 is the initial noise x_1, step S is the draft
  step k     (k >= 1) one ancestral transition x_{t_{k-1}} -> x_{t_k}: the denoiser is called on
             x_{t_{k-1}} at time t_{k-1} and gives x̂0; x_{t_k} ~ q(x_{t_k} | x_{t_{k-1}}, x̂0'),
             the exact posterior of the noise (`Diffusion.posterior`), where x̂0' is x̂0 after
             temperature and top-p. If cfg.greedy_last, the last step (t_S = 0) instead writes
             argmax x̂0 at every free position (under absorbing noise, unmasked tokens are kept:
             their posterior is a point mass).
  pin        position -> token id that is HARD: written into the sequence before the first
             model call (the initial noise included), passed to the denoiser as clean=True,
             never sampled, so it never changes at any step
  held       pins plus `clean_extra` positions (held at their current tokens); Step.pinned
  confidence per position of a step: the x̂0 probability (the denoiser's own, before temperature
             and top-p) of the token the step now shows; 1.0 at held positions; 0.0 at free
             positions of step 0 (no prediction has been made yet)
  edit       replace tokens[start:end] by new ids (any length): later positions and pins shift
             by the length difference and the new span is pinned (`apply_edit`, `edit_step`)
  committed  with cfg.commit, free positions whose token is final (`engine.commit`); held and
             passed as clean like pins, recorded in Step.committed
  word rule  with a model's lexicon (`engine.words`): whole words, spaced openings after held
             clause ends, no near repeats, no label echo (cfg.whole_words, no_repeat, avoid_labels)

Determinism: step k draws its randomness from a generator seeded by step_seed(cfg.seed, k) (the
initial noise uses k = 0). Sampling happens on the CPU, so a run is a function of
(seed, pins, start) and of the denoiser's outputs only. Resuming from a recorded step k with
the same pins therefore reproduces the original steps k+1..S exactly; resuming with new pins
(or edited tokens, see `resume_from` / `edit_step`) continues from step k with them.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Collection, Iterator, Mapping, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from engine.commit import avoid_phrases, ban_nearby_words, commit_target, derive_committed, spread_same_step
from engine.config import SamplerConfig
from engine.diffusion import Denoiser, Diffusion
from engine.draws import categorical
from engine.kernels import FORBIDDEN_LOGIT
from engine.positions import shift_positions
from engine.slot_end import end_at_stop, end_cut, same_step
from engine.tokenizer import EOS
from engine.words import LabelRule, WordRule
from engine.x0 import shape_x0, step_weights, tempered  # noqa: F401  (shape_x0, tempered: the sampler's API)


class ConstraintError(ValueError):
    """A pin or an edit that cannot be applied (outside the sequence, overlapping a pin...)."""


@dataclass(frozen=True, eq=False)
class Step:
    """One state of the reverse process. Tensors are on the CPU; treat them as read-only.

    index        k: 0 = the initial noise, total_steps = the finished draft
    t            t_k = 1 - k / total_steps
    tokens       (L,) long: x_{t_k}, pins included
    confidence   (L,) float32: x̂0 probability of the token shown (1.0 held, 0.0 free at step 0)
    changed      (L,) bool: tokens that differ from the previous step (all False at step 0)
    pinned       (L,) bool: held positions (pins and clean_extra)
    committed    (L,) bool or None: free positions whose token is final (cfg.commit); None when
                 not known (a step rebuilt from its tokens), then derived from confidence
    """

    index: int
    t: float
    tokens: Tensor
    confidence: Tensor
    changed: Tensor
    pinned: Tensor
    total_steps: int
    committed: Tensor | None = None

    @property
    def length(self) -> int:
        return int(self.tokens.numel())

    @property
    def done(self) -> bool:
        return self.index == self.total_steps

    def same_as(self, other: Step) -> bool:
        """Every field equal (tensors element-wise)."""
        return (
            self.index == other.index
            and self.t == other.t
            and self.total_steps == other.total_steps
            and all(torch.equal(getattr(self, f), getattr(other, f)) for f in ("tokens", "confidence", "changed", "pinned"))
            and _same_mask(self.committed, other.committed)
        )


def _same_mask(a: Tensor | None, b: Tensor | None) -> bool:
    return (a is None and b is None) or (a is not None and b is not None and torch.equal(a, b))


# ----- time grid and seeds ---------------------------------------------------------------------
def time_grid(steps: int) -> list[float]:
    """[t_0, ..., t_S] with t_k = 1 - k / S (t_0 = 1.0, t_S = 0.0 exactly)."""
    return [(steps - k) / steps for k in range(steps + 1)]


def step_seed(seed: int, index: int) -> int:
    """A 63-bit seed for step `index` of the run seeded by `seed` (splitmix64 of the pair)."""
    mask = (1 << 64) - 1
    x = (int(seed) * 0x9E3779B97F4A7C15 + int(index) * 0xBF58476D1CE4E5B9 + 0x94D049BB133111EB) & mask
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & mask
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & mask
    return (x ^ (x >> 31)) >> 1


def _generator(seed: int, index: int) -> torch.Generator:
    return torch.Generator().manual_seed(step_seed(seed, index))


# ----- pins and edits --------------------------------------------------------------------------
def validate_pins(pins: Mapping[int, int], length: int, vocab_size: int | None = None) -> None:
    """Raise ConstraintError unless every pin position is in 0..length-1 (and, when vocab_size is
    given, every pinned id is in 0..vocab_size-1)."""
    for pos, tok in pins.items():
        if isinstance(pos, bool) or not isinstance(pos, int):
            raise ConstraintError(f"pin position {pos!r} is not an integer")
        if not 0 <= pos < length:
            last = f"0..{length - 1}" if length > 0 else "none: the sequence is empty"
            raise ConstraintError(f"pin at position {pos} is outside the sequence (positions {last})")
        if vocab_size is not None and not 0 <= int(tok) < vocab_size:
            raise ConstraintError(f"pin at position {pos} has token id {tok}, outside the vocabulary 0..{vocab_size - 1}")


def apply_edit(tokens: Tensor, pins: Mapping[int, int], start: int, end: int, new_ids: Sequence[int]) -> tuple[Tensor, dict[int, int]]:
    """Replace tokens[start:end] by new_ids and pin them; positions and pins from `end` on move
    by len(new_ids) - (end - start). start == end inserts; empty new_ids deletes.

    Raises ConstraintError (and changes nothing) for a span outside the sequence, start > end,
    a span that covers a pinned position, a negative id, or pins outside the sequence."""
    L = int(tokens.numel())
    validate_pins(pins, L)
    if start > end:
        raise ConstraintError(f"edit span start {start} is after its end {end}")
    if not 0 <= start <= end <= L:
        raise ConstraintError(f"edit span [{start}, {end}) is outside the sequence (positions 0..{L}, end exclusive)")
    covered = sorted(p for p in pins if start <= p < end)
    if covered:
        raise ConstraintError(f"edit span [{start}, {end}) overlaps pinned position(s) {covered}; unpin them first")
    ids = [int(i) for i in new_ids]
    if any(i < 0 for i in ids):
        raise ConstraintError(f"edit has negative token id(s) {[i for i in ids if i < 0]}")
    new = torch.tensor(ids, dtype=tokens.dtype, device=tokens.device)  # (n,)
    out = torch.cat([tokens[:start], new, tokens[end:]])  # (L + n - (end - start),)
    # pins move by the one position rule; none lies inside the span (refused above)
    shifted = {p: int(v) for p, v in shift_positions(pins, start, end, len(ids)).items()}
    shifted.update({start + i: tid for i, tid in enumerate(ids)})
    return out, dict(sorted(shifted.items()))


def lock_term(tokens: Tensor, pins: Mapping[int, int], term_ids: Sequence[int]) -> dict[int, int]:
    """`pins` plus a pin on every occurrence of the id sequence term_ids in tokens (overlapping
    occurrences included). No occurrence: the pins are returned unchanged (as a new dict)."""
    term = [int(i) for i in term_ids]
    if not term:
        raise ConstraintError("cannot lock an empty term")
    validate_pins(pins, int(tokens.numel()))
    seq = tokens.tolist()
    out = dict(pins)
    n = len(term)
    for i in range(len(seq) - n + 1):
        if seq[i : i + n] == term:
            for j, tid in enumerate(term):
                if out.get(i + j, tid) != tid:
                    raise ConstraintError(f"term at position {i} conflicts with the pin at position {i + j}")
                out[i + j] = tid
    return dict(sorted(out.items()))


def _held_step(step: Step, tokens: Tensor, pins: Mapping[int, int], confidence: Tensor, changed: Tensor,
               committed: Tensor | None = None) -> Step:
    L = int(tokens.numel())
    validate_pins(pins, L)
    tokens = tokens.detach().to("cpu", torch.long).clone()  # (L,)
    pinned = torch.zeros(L, dtype=torch.bool)  # (L,)
    for p, v in pins.items():
        tokens[p] = int(v)
        pinned[p] = True
    confidence = torch.where(pinned, torch.ones(L), confidence.to(torch.float32))
    if committed is not None:
        committed = committed & ~pinned
    return Step(step.index, step.t, tokens, confidence, changed, pinned, step.total_steps, committed)


def resume_from(step: Step, tokens: Tensor, pins: Mapping[int, int]) -> Step:
    """The state to resume from after replacing step.tokens by `tokens` (any length) under `pins`:
    same index and t, pins written in. Pass it as `start=` to `sample` with the same pins.
    Confidence is kept where the length is unchanged (zero otherwise), 1.0 at pins; `changed`
    marks tokens that differ from step.tokens (all, if the length changed). Committed positions
    stay committed where the length and their token are unchanged."""
    L = int(tokens.numel())
    same = L == step.length
    conf = step.confidence if same else torch.zeros(L)
    committed = step.committed & (tokens.to(step.tokens.device) == step.tokens) if same and step.committed is not None else None
    out = _held_step(step, tokens, pins, conf, torch.ones(L, dtype=torch.bool), committed)
    return dataclasses.replace(out, changed=out.tokens != step.tokens) if same else out


def edit_step(step: Step, pins: Mapping[int, int], start: int, end: int, new_ids: Sequence[int]) -> tuple[Step, dict[int, int]]:
    """apply_edit on a recorded step: returns (the step to resume from, the new pins). Confidence
    and `changed` shift with the tokens; the new span has confidence 1.0 and changed=True."""
    tokens, new_pins = apply_edit(step.tokens, pins, start, end, new_ids)
    n = len(new_ids)
    conf = torch.cat([step.confidence[:start], torch.ones(n), step.confidence[end:]])  # (L',)
    changed = torch.cat([torch.zeros(start, dtype=torch.bool), torch.ones(n, dtype=torch.bool), torch.zeros(step.length - end, dtype=torch.bool)])
    committed = None
    if step.committed is not None:
        committed = torch.cat([step.committed[:start], torch.zeros(n, dtype=torch.bool), step.committed[end:]])  # (L',)
    return _held_step(step, tokens, new_pins, conf, changed, committed), new_pins


def _check_config(cfg: SamplerConfig) -> None:
    if isinstance(cfg.steps, bool) or not isinstance(cfg.steps, int) or cfg.steps < 1:
        raise ValueError(f"sampler steps must be an integer >= 1, got {cfg.steps!r}")
    free = cfg.free_steps
    if free is not None and (isinstance(free, bool) or not isinstance(free, int) or free < 1):
        raise ValueError(f"sampler free_steps must be an integer >= 1 or none, got {free!r}")
    if not (math.isfinite(cfg.temperature) and cfg.temperature >= 0.0):
        raise ValueError(f"sampler temperature must be >= 0 (0 = argmax), got {cfg.temperature}")
    if not 0.0 < cfg.top_p <= 1.0:
        raise ValueError(f"sampler top_p must be in (0, 1], got {cfg.top_p}")
    if cfg.commit_order not in ("confidence", "frontier"):
        raise ValueError(f"sampler commit_order must be 'confidence' or 'frontier', got {cfg.commit_order!r}")
    if isinstance(cfg.no_repeat, bool) or not isinstance(cfg.no_repeat, int) or not 0 <= cfg.no_repeat <= 64:
        raise ValueError(f"sampler no_repeat must be an integer in 0..64, got {cfg.no_repeat!r}")
    if not (math.isfinite(cfg.commit_power) and 0.25 <= cfg.commit_power <= 8.0):
        raise ValueError(f"sampler commit_power must be in 0.25..8, got {cfg.commit_power}")
    end = cfg.temperature_end
    if end is not None and not (math.isfinite(end) and end >= 0.0):
        raise ValueError(f"sampler temperature_end must be >= 0 (0 = argmax), got {end}")


def step_temperature(cfg: SamplerConfig, k: int) -> float:
    """Temperature of step k (1..S): `temperature`, or linear from it at step 1 to
    `temperature_end` at step S."""
    if cfg.temperature_end is None or cfg.steps == 1:
        return cfg.temperature
    frac = (k - 1) / (cfg.steps - 1)
    return cfg.temperature + (cfg.temperature_end - cfg.temperature) * frac


def _device(model: object) -> torch.device:
    params = getattr(model, "parameters", None)
    if callable(params):
        for p in params():
            return p.device
    return torch.device("cpu")


def _free_logits(model: Denoiser, x: Tensor, t: Tensor, clean: Tensor, free_idx: Tensor) -> Tensor:
    """(n, V) logits at the free positions only; uses model.features + model.head when present."""
    with torch.inference_mode():
        features, head = getattr(model, "features", None), getattr(model, "head", None)
        if callable(features) and callable(head) and getattr(model, "features_of_rows", False):
            return head(features(x, t, clean, rows=free_idx.to(x.device))[0])  # (n, V)
        if callable(features) and callable(head):
            h = features(x, t, clean)[0]  # (L, D)
            return head(h if free_idx.numel() == h.shape[0] else h[free_idx.to(h.device)])  # (n, V)
        return model(x, t, clean)[0, free_idx.to(x.device)]  # (n, V)


# ----- the reverse process ---------------------------------------------------------------------
def sample(
    model: Denoiser,
    diffusion: Diffusion,
    cfg: SamplerConfig,
    *,
    length: int | None = None,
    pins: Mapping[int, int] | None = None,
    start: Step | None = None,
    clean_extra: Tensor | None = None,
    words: WordRule | None = None,
    labels: Collection[int] | None = None,
) -> Iterator[Step]:
    """Yield the steps of one reverse run: steps 0..S for a fresh run of `length` tokens, or
    steps k+1..S when resuming from `start` (a recorded Step of index k, possibly with tokens
    replaced by `resume_from` / `edit_step`; its length is used and `length` must match or be None).

    `pins` (position -> id) are hard at every step. `clean_extra` (L,) bool marks more positions
    held at their current tokens of `start` and passed as clean (requires `start`). `words` is the
    model's word rule (`engine.words`), needed by cfg.whole_words, no_repeat and avoid_labels.
    `labels` are the token ids of a template's fixed text: with cfg.avoid_labels, free positions
    never draw those that hold a capitalised word (`WordRule.label_ids`), and a committed token
    never completes a label of two words or more in any case (`WordRule.label_phrases`).
    Arguments are checked before the first step: ValueError for a bad config / length / start,
    ConstraintError for bad pins."""
    _check_config(cfg)
    if (cfg.whole_words or cfg.avoid_labels) and words is None:
        raise ValueError("whole_words and avoid_labels need the model's word rule (a lexicon.txt in its folder)")
    if cfg.no_repeat and (words is None or not cfg.commit):
        raise ValueError("no_repeat needs commit=True and the model's word rule (a lexicon.txt in its folder)")
    S = cfg.steps
    pins = {int(p): int(v) for p, v in (pins or {}).items()}
    if start is None:
        if length is None:
            raise ValueError("sample needs a length (fresh run) or a start step (resume)")
        if isinstance(length, bool) or not isinstance(length, int) or length < 1:
            raise ValueError(f"length must be an integer >= 1, got {length!r}")
        if clean_extra is not None:
            raise ValueError("clean_extra holds tokens of a start step; give start= as well")
        validate_pins(pins, length, diffusion.vocab_size)
        tokens = diffusion.prior((length,), _generator(cfg.seed, 0), "cpu").to(torch.long)  # (L,)
        k0 = 0
    else:
        length_s = start.length
        if length is not None and length != length_s:
            raise ValueError(f"length {length} does not match the start step's {length_s} tokens")
        if start.total_steps != S:
            raise ValueError(f"start step belongs to a run of {start.total_steps} steps, but cfg.steps is {S}")
        if not 0 <= start.index <= S:
            raise ValueError(f"start step index {start.index} is outside 0..{S}")
        if length_s < 1:
            raise ValueError("the start step has no tokens")
        length = length_s
        validate_pins(pins, length, diffusion.vocab_size)
        tokens = start.tokens.detach().to("cpu", torch.long).clone()  # (L,)
        k0 = start.index
    held = torch.zeros(length, dtype=torch.bool)  # (L,)
    for p, v in pins.items():
        tokens[p] = v
        held[p] = True
    if clean_extra is not None:
        extra = torch.as_tensor(clean_extra, dtype=torch.bool).cpu()
        if extra.shape != (length,):
            raise ValueError(f"clean_extra must have shape ({length},), got {tuple(extra.shape)}")
        held |= extra
    committed = None
    if cfg.commit and start is not None:
        committed = start.committed
        if committed is None or committed.shape != (length,):
            committed = derive_committed(start.confidence, held, start.index, start.total_steps, cfg.commit_power)
        committed = committed.to("cpu", torch.bool) & ~held
    conf = start.confidence.to("cpu", torch.float32) if start is not None else torch.zeros(length)
    avoid = LabelRule.of(words, labels if cfg.avoid_labels else None)
    return _run(model, diffusion, cfg, tokens, held, k0, fresh=start is None, words=words, committed=committed, conf=conf,
                avoid=avoid)


@torch.inference_mode()
def _reverse_step(model: Denoiser, diffusion: Diffusion, cfg: SamplerConfig, tokens: Tensor, held: Tensor, free_idx: Tensor,
                  forbidden_idx: Tensor, k: int, t_prev: float, t_now: float, device: torch.device,
                  words: WordRule | None, n_commit: int, avoid: LabelRule, pins: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Step k: tokens at t_prev -> (tokens at t_now, confidence, newly committed), all (L,), held
    positions kept. With cfg.commit, the n_commit free positions whose x̂0 draw is most
    confident take that draw and become final; the others take the posterior draw. `held` is
    what is fixed at this step (the caller's holds and the committed); `pins` (L,) the caller's
    holds alone, which bound the slots of cfg.end_of_slot.
    Runs under inference mode; the mode ends before the generator yields to its caller."""
    S = cfg.steps
    new = tokens.clone()  # (L,)
    conf = torch.ones(tokens.shape[0])  # (L,)
    commit = torch.zeros(tokens.shape[0], dtype=torch.bool)  # (L,)
    if free_idx.numel() == 0:
        return new, conf, commit
    x = tokens[None].to(device)  # (1, L)
    t_in = torch.full((1,), t_prev, dtype=torch.float32, device=device)  # (1,)
    logits = _free_logits(model, x, t_in, held[None].to(device), free_idx).to("cpu", torch.float32)  # (n, V)
    if forbidden_idx.numel():
        logits.index_fill_(-1, forbidden_idx, FORBIDDEN_LOGIT)  # ours to change: fresh from the head
    greedy = k == S and cfg.greedy_last
    ends = end_cut(tokens, pins, held, free_idx, EOS) if cfg.end_of_slot else None
    weights, shaped, total, best = step_weights(logits, step_temperature(cfg, k), cfg.top_p, greedy, tokens, held,
                                                free_idx, words if cfg.whole_words else None, avoid, ends)
    z = tokens[free_idx]  # (n,)
    gen = _generator(cfg.seed, k)
    if greedy:
        chosen = torch.where(diffusion.is_decided(z), z, weights.argmax(-1))  # (n,)
    else:
        chosen = diffusion.sample_posterior(z, weights if shaped is None else shaped, t_prev, t_now, gen)  # (n,)
    final = torch.zeros(free_idx.numel(), dtype=torch.bool)  # (n,) rows whose token is final now
    if cfg.commit and n_commit > 0:
        dist = weights if shaped is None else shaped  # (n, V)
        if cfg.no_repeat and words is not None:
            dist = ban_nearby_words(dist, tokens, held, free_idx, cfg.no_repeat, words, inplace=shaped is not None,
                                    best=best)
        if greedy:
            draw = dist.argmax(-1)  # (n,)
        else:
            draw = categorical(dist, gen)  # (n,)
        p_draw = weights.gather(-1, draw[:, None])[:, 0] / total  # (n,)
        p_list = p_draw.tolist()  # Python floats: the sort reads each many times
        if cfg.commit_order == "frontier":  # grow the text from what is final: its right edges first
            left = (free_idx - 1).clamp(min=0)
            edge = ((free_idx > 0) & held[left]).tolist()
            order = sorted(range(free_idx.numel()), key=lambda r: (not edge[r], -p_list[r], r))[:n_commit]
        else:
            order = sorted(range(free_idx.numel()), key=lambda r: (-p_list[r], r))[:n_commit]
        if cfg.no_repeat and words is not None:
            draw = spread_same_step(draw, dist, order, tokens, held, free_idx, cfg.no_repeat, words.word_of, greedy, gen)
        if avoid.phrases and words is not None:
            draw = avoid_phrases(draw, dist, order, tokens, held, free_idx, avoid.phrases, words, greedy, gen)
        if ends is not None:
            draw = same_step(draw, dist, order, tokens, pins, held, free_idx, EOS, greedy, gen)
        final[torch.tensor(order)] = True
        chosen = torch.where(final, draw, chosen)
    elif k == S:
        final[:] = True
    new[free_idx] = chosen
    if words is not None and cfg.whole_words and bool(final.any()):
        new = words.repair(new, held, weights, free_idx, fixable=final, phrases=avoid.phrases)
        chosen = new[free_idx]
    conf[free_idx] = weights.gather(-1, chosen[:, None])[:, 0] / total
    if cfg.commit:
        commit[free_idx[final]] = True
    return new, conf, commit


def _run(model: Denoiser, diffusion: Diffusion, cfg: SamplerConfig, tokens: Tensor, held: Tensor, k0: int, *, fresh: bool,
         words: WordRule | None, committed: Tensor | None, conf: Tensor, avoid: LabelRule) -> Iterator[Step]:
    S = cfg.steps
    grid = time_grid(S)
    L = int(tokens.numel())
    device = _device(model)
    writable = int((~held).sum())
    forbidden_idx = diffusion.forbidden.nonzero().flatten()  # ids x̂0 never puts mass on
    ones = torch.ones(L)
    if committed is None:
        committed = torch.zeros(L, dtype=torch.bool)  # (L,)
    keep = committed.clone() if cfg.commit else None
    last_conf = conf
    if fresh:
        conf0 = torch.where(held, ones, torch.zeros(L))  # (L,)
        yield Step(0, grid[0], tokens.clone(), conf0, torch.zeros(L, dtype=torch.bool), held.clone(), S, keep)
    for k in range(k0 + 1, S + 1):
        t_prev, t_now = grid[k - 1], grid[k]
        fixed = held | committed  # (L,) clean for the model, never resampled
        free_idx = (~fixed).nonzero().flatten()  # (n,)
        n_commit = max(0, commit_target(writable, k, S, cfg.commit_power) - int(committed.sum())) if cfg.commit else 0
        new, conf, now = _reverse_step(model, diffusion, cfg, tokens, fixed, free_idx, forbidden_idx, k, t_prev, t_now,
                                       device, words, n_commit, avoid, held)
        new, conf = new.clone(), conf.clone()  # ordinary tensors for the caller, not inference tensors
        if k == S and cfg.end_at_stop and cfg.end_of_slot and words is not None:
            new = end_at_stop(new, held, EOS, words.stops, words.spaced, words.line_start)
        if cfg.commit:
            conf = torch.where(committed, last_conf, conf)  # a committed token keeps its confidence
            committed = committed | now.clone()
        last_conf = conf
        changed = new != tokens
        tokens = new
        yield Step(k, t_now, tokens.clone(), conf, changed, held.clone(), S, committed.clone() if cfg.commit else None)
