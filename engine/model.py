"""The SFDLM denoiser network: logits = f(x_t, t, clean). No attention anywhere.

Glossary
  B, L, D, V  batch, sequence length, model width, vocabulary size
  x_t         noisy token ids (B, L)
  t           diffusion time in [0, 1] (B,)
  clean       positions the caller guarantees are clean (pins, prompt) (B, L) bool
  c           time conditioning vector (B, D)
  h           hidden states (B, L, D)

Block (pre-norm, residual, adaLN-Zero modulation from c; see engine.layers):
  h += g1 * SSM(norm1(h))          bidirectional diagonal SSM, two-sided FFT convolution,
                                   output out(y * silu(u)) (cfg.ssm_gate = "input")
  h += g2 * FourierMLP(norm2(h))   complex MLP per rfft bin + smooth complex filter
  h += g3 * MLP(norm3(h))          channel MLP
U-Net-like long skips: the output of block i (first half) is added, with a learned
per-channel gate, to the input of block n_layers - 1 - i (second half). A gated add costs one
elementwise pass; concat + linear would cost 2 D^2 per token per skip.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from engine.config import ModelConfig
from engine.layers import (AdaLN, BidirectionalSSM, ChannelMLP, ComplexFourierMLP,
                           TimeEmbedding, modulated_norm)


class SFDLMBlock(nn.Module):
    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        d = cfg.d_model
        self.adaln = AdaLN(d, 3)
        self.ssm = BidirectionalSSM(d, cfg.d_state, init=cfg.ssm_init,
                                    cache_mb=cfg.kernel_cache_mb,
                                    direct_max_len=cfg.direct_max_len, gate=cfg.ssm_gate)
        self.fourier = ComplexFourierMLP(d, cfg.fourier_blocks, cfg.fourier_mult,
                                         direct_max_len=cfg.direct_max_len)
        self.mlp = ChannelMLP(d, cfg.mlp_mult)
        self.drop = nn.Dropout(cfg.dropout)

    def forward(self, h: Tensor, c: Tensor) -> Tensor:
        m = self.adaln(c)  # (B, 3, 3, 1, D): sublayer x (shift, scale, gate)
        inplace = not torch.is_grad_enabled()
        for i, sub in enumerate((self.ssm, self.fourier, self.mlp)):
            y = sub(modulated_norm(h, m[:, i, 0], m[:, i, 1]))  # (B, L, D)
            if inplace and i > 0:  # h is our own tensor after the first residual
                h.addcmul_(m[:, i, 2], y)
            else:
                h = torch.addcmul(h, m[:, i, 2], self.drop(y))
        return h


class DenoiserBase(nn.Module):
    """What every denoiser shares: token + clean embeddings, time conditioning, a final
    modulated norm and the tied head. Subclasses name their block and define `features`."""

    def __init__(self, cfg: ModelConfig, make_block: Callable[[ModelConfig], nn.Module]) -> None:
        super().__init__()
        self.cfg = cfg
        d = cfg.d_model
        self.embed = nn.Embedding(cfg.vocab_size, d)
        nn.init.normal_(self.embed.weight, std=0.02)
        self.clean_embed = nn.Parameter(torch.randn(d) * 0.02)  # (D,)
        self.time = TimeEmbedding(cfg.time_dim, d)
        self.blocks = nn.ModuleList(make_block(cfg) for _ in range(cfg.n_layers))
        self.final = AdaLN(d, 1, with_gate=False)

    def embed_inputs(self, x_t: Tensor, t: Tensor, clean: Tensor) -> tuple[Tensor, Tensor]:
        """(h (B, L, D), time conditioning c (B, D)): tokens, plus the clean embedding where clean."""
        h = self.embed(x_t)  # (B, L, D)
        h = torch.addcmul(h, clean.unsqueeze(-1).to(h.dtype), self.clean_embed)
        return h, self.time(t)

    def final_norm(self, h: Tensor, c: Tensor) -> Tensor:
        m = self.final(c)  # (B, 1, 2, 1, D)
        return modulated_norm(h, m[:, 0, 0], m[:, 0, 1])

    def features(self, x_t: Tensor, t: Tensor, clean: Tensor) -> Tensor:
        raise NotImplementedError

    def head(self, h: Tensor) -> Tensor:
        """Logits tied to the token embedding: (..., D) -> (..., V)."""
        return F.linear(h, self.head_weight())

    def head_weight(self) -> Tensor:
        """(V, D): logits = features @ head_weight().T (the losses fuse the head with this)."""
        return self.embed.weight

    def forward(self, x_t: Tensor, t: Tensor, clean: Tensor, features_only: bool = False) -> Tensor:
        """Logits (B, L, V), or with features_only the features (B, L, D) they are the head of
        (a keyword, so that a DDP wrapper passes it through)."""
        h = self.features(x_t, t, clean)
        return h if features_only else self.head(h)


class SFDLM(DenoiserBase):
    """State-Fourier diffusion LM denoiser (see docs of engine.layers for the layers)."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__(cfg, SFDLMBlock)
        self.n_skips = cfg.n_layers // 2
        self.skip_gate = nn.Parameter(torch.full((self.n_skips, cfg.d_model), 0.5))  # (S, D)

    def features(self, x_t: Tensor, t: Tensor, clean: Tensor) -> Tensor:
        """Final-normed hidden states (B, L, D); logits = head(features)."""
        h, c = self.embed_inputs(x_t, t, clean)  # (B, L, D), (B, D)
        n = len(self.blocks)
        skips: list[Tensor] = []
        for i, block in enumerate(self.blocks):
            j = n - 1 - i  # partner block in the first half
            if j < self.n_skips and i >= n - self.n_skips:
                h = torch.addcmul(h, self.skip_gate[j], skips[j])
            h = block(h, c)
            if i < self.n_skips:
                skips.append(h)
        return self.final_norm(h, c)


def build_model(cfg: ModelConfig) -> nn.Module:
    """The denoiser (or causal LM baseline) named by cfg.arch."""
    if cfg.arch == "sfdlm":
        return SFDLM(cfg)
    from engine.baseline import CausalLM, TransformerDenoiser

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
