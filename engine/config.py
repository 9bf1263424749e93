"""Frozen dataclass configs, one per component, saved as JSON beside the weights.

Glossary
  V   vocabulary size (every token id the model can emit, specials included)
  D   model width (d_model)
  N   SSM state size per channel (complex modes; N/2 conjugate pairs are implied by taking Re)
  L   sequence length (any; nothing in the SFDLM depends on a maximum length)
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, Literal, TypeVar

T = TypeVar("T")


@dataclass(frozen=True)
class ModelConfig:
    """The denoiser network (and the baselines of equal width and depth)."""

    vocab_size: int = 8192
    d_model: int = 256  # D
    n_layers: int = 6  # number of blocks; U-Net long skips join block i and n_layers-1-i
    d_state: int = 64  # N: complex diagonal SSM modes per channel
    mlp_mult: int = 4  # channel MLP hidden = mlp_mult * D
    fourier_blocks: int = 8  # block-diagonal complex MLP in the Fourier layer (D divisible)
    fourier_mult: int = 2  # hidden width multiplier of the complex MLP per block
    dropout: float = 0.0
    arch: Literal["sfdlm", "transformer", "causal"] = "sfdlm"
    n_heads: int = 4  # transformer baselines only
    time_dim: int = 128  # sinusoidal time features before the time MLP
    ssm_init: Literal["lin", "inv"] = "lin"  # S4D-Lin or S4D-Inv initialisation of A
    kernel_cache_mb: float = 24.0  # per SSM layer: cache kernels (inference) up to this size
    direct_max_len: int = 64  # L <= this: DFT-as-matmul instead of FFT (SSM + Fourier layer)
    ssm_gate: Literal["input", "linear"] = "input"  # SSM output gate: silu(u) or silu(Linear(u))


@dataclass(frozen=True)
class DiffusionConfig:
    noise: Literal["uniform", "absorbing"] = "uniform"
    schedule: Literal["loglinear", "cosine"] = "loglinear"
    eps: float = 1e-3  # alpha(1) = eps (≈ 0); t is sampled in [t_min, 1]
    t_min: float = 1e-4


@dataclass(frozen=True)
class SamplerConfig:
    steps: int = 32
    temperature: float = 1.0
    top_p: float = 1.0
    greedy_last: bool = True  # the final step writes argmax x̂_0 for every free position
    seed: int = 0
    temperature_end: float | None = None  # anneal: temperature at the last step (linear from `temperature`)
    commit: bool = False  # commit the most confident tokens first, a share (k/S)^commit_power of them by step k
    commit_order: str = "confidence"  # "confidence", or "frontier": positions right after final text first
    no_repeat: int = 0  # with commit: a committed word token differs from final ones this near (needs a word rule)
    whole_words: bool = False  # tokens that become final are mended into words (engine.words)
    avoid_labels: bool = False  # free positions never draw the capitalised words of the template's text
    commit_power: float = 1.0  # commit schedule's exponent: > 1 commits few tokens early and more late
    end_of_slot: bool = False  # <eos> ends a slot's fill and stays a suffix of it (engine.slot_end; without commit: no <eos>)
    end_at_stop: bool = False  # with end_of_slot and a lexicon: at the last step a fill ends at its last sentence end (engine.slot_end)
    free_steps: int | None = None  # the default steps of a free-length draft (None: `steps`, as a template's); see for_kind


def for_kind(cfg: SamplerConfig, *, free_length: bool) -> SamplerConfig:
    """The settings a draft of this kind runs with by default: a free-length draft takes
    `free_steps` where the model sets it (its whole canvas is written, where a template's slots
    are short runs between fixed text), a template draft `steps`. The sampler itself reads
    `steps` only."""
    if free_length and cfg.free_steps is not None:
        return dataclasses.replace(cfg, steps=cfg.free_steps)
    return cfg


# What engine.train writes into a new model folder (which always has a lexicon): the setting
# chosen from bench.draft_quality's quality / latency table (docs/RESULTS.md, "Draft quality").
RECOMMENDED_SAMPLER = SamplerConfig(steps=10, free_steps=14, temperature=0.6, temperature_end=0.25, commit=True,
                                    commit_power=2.0, no_repeat=5, whole_words=True, avoid_labels=True, end_at_stop=True)


@dataclass(frozen=True)
class TrainConfig:
    seq_len: int = 256
    batch_size: int = 8
    lr: float = 3e-4
    weight_decay: float = 0.0
    warmup_steps: int = 200
    max_steps: int = 10_000
    grad_clip: float = 1.0
    eval_every: int = 500
    seed: int = 0
    clean_prob: float = 0.5  # chance a training sequence gets clean spans (prefix / spans / headings)
    max_seconds: float = 0.0  # > 0: stop after this much training time; the cosine schedule then runs over time
    feedback_share: float = 0.0  # fine-tuning on feedback (engine.feedback): share of each batch drawn from it
    slot_share: float = 0.0  # share of each batch drawn as template-shaped rows (engine.slot_data: fills end in <eos>)
    slot_tight: float = 0.7  # of those rows' fills that end early, the share in a slot sized to them (engine.slot_data)


def to_dict(cfg: Any) -> dict[str, Any]:
    return dataclasses.asdict(cfg)


def from_dict(cls: type[T], data: dict[str, Any]) -> T:
    """Build `cls` from a dict; unknown keys are an error that names them."""
    names = {f.name for f in fields(cls)}  # type: ignore[arg-type]
    unknown = sorted(set(data) - names)
    if unknown:
        raise ValueError(f"{cls.__name__}: unknown field(s) {', '.join(unknown)}")
    return cls(**data)


def save_json(path: Path, **configs: Any) -> None:
    """Write several configs into one JSON object keyed by name (e.g. model=..., diffusion=...)."""
    path.write_text(json.dumps({k: to_dict(v) for k, v in configs.items()}, indent=2, sort_keys=True))


def parse_sampler_spec(spec: str, base: SamplerConfig) -> SamplerConfig:
    """'steps=64,commit=1,temperature_end=0.5' -> `base` with those fields replaced. Values are read
    by each field's type (bools: 1/0/true/false; 'none' for an optional float); the seed is per
    draft and cannot be set here. Setting `steps` without `free_steps` sets both: one step count
    for every kind of draft (see for_kind). ValueError names a bad part."""
    kinds = {f.name: str(f.type) for f in fields(SamplerConfig) if f.name != "seed"}
    changes: dict[str, Any] = {}
    for part in filter(None, (p.strip() for p in spec.split(","))):
        key, sep, raw = (x.strip() for x in part.partition("="))
        if not sep or key not in kinds:
            raise ValueError(f"bad sampler setting {part!r}; fields: {', '.join(kinds)}")
        kind, low = kinds[key], raw.lower()
        try:
            if kind == "bool":
                if low not in ("1", "0", "true", "false"):
                    raise ValueError(raw)
                changes[key] = low in ("1", "true")
            elif kind == "int":
                changes[key] = int(raw)
            elif kind == "int | None":
                changes[key] = None if low == "none" else int(raw)
            elif kind == "str":
                changes[key] = raw
            else:
                changes[key] = None if low == "none" and "None" in kind else float(raw)
        except ValueError:
            raise ValueError(f"bad sampler setting {part!r}: {raw!r} is not a {kind}") from None
    if "steps" in changes and "free_steps" not in changes:
        changes["free_steps"] = None
    return dataclasses.replace(base, **changes)
