"""What every denoiser shares: embeddings, time conditioning, the final norm and the tied head.

engine.model's SFDLM and engine.baseline's TransformerDenoiser subclass DenoiserBase; each names
its block and defines `features`. The loss fuses the tied head with its kernels
(`head_weight`, `features_only`; engine.diffusion, engine.kernels).

Glossary
  B, L, D, V  batch, sequence length, model width, vocabulary size
  x_t         noisy token ids (B, L)
  t           diffusion time in [0, 1] (B,)
  clean       positions the caller guarantees are clean (pins, prompt) (B, L) bool
  c           time conditioning vector (B, D)
  h           hidden states (B, L, D)
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from engine.config import ModelConfig
from engine.layers import AdaLN, TimeEmbedding, modulated_norm


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
