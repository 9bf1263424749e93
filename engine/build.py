"""Build the network a model config names, and count its parameters.

  cfg.arch     "sfdlm" (engine.model.SFDLM), "transformer" (engine.baseline.TransformerDenoiser)
               or "causal" (engine.baseline.CausalLM, the autoregressive baseline)
"""

from __future__ import annotations

from torch import nn

from engine.baseline import CausalLM, TransformerDenoiser
from engine.config import ModelConfig
from engine.model import SFDLM


def build_model(cfg: ModelConfig) -> nn.Module:
    """The denoiser (or causal LM baseline) named by cfg.arch."""
    if cfg.arch == "sfdlm":
        return SFDLM(cfg)
    if cfg.arch == "transformer":
        return TransformerDenoiser(cfg)
    if cfg.arch == "causal":
        return CausalLM(cfg)
    raise ValueError(f"unknown arch {cfg.arch!r}")


def count_parameters(model: nn.Module) -> int:
    """Number of distinct trainable parameters (tied weights counted once)."""
    seen: set[int] = set()
    total = 0
    for p in model.parameters():
        if p.requires_grad and id(p) not in seen:
            seen.add(id(p))
            total += p.numel()
    return total
