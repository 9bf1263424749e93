"""The SFDLM denoiser network: logits = f(x_t, t, clean). No attention anywhere.

build_model (engine.build) builds it, or a baseline, from a ModelConfig.

Shapes and names (B, L, D, V, x_t, t, clean, c, h) as in engine.denoiser's glossary.

Block (pre-norm, residual, adaLN-Zero modulation from c; engine.layers, engine.ssm,
engine.fourier_mlp):
  h += g1 * SSM(norm1(h))          bidirectional diagonal SSM, two-sided FFT convolution,
                                   output out(y * silu(u)) (cfg.ssm_gate = "input")
  h += g2 * FourierMLP(norm2(h))   complex MLP per rfft bin + smooth complex filter
  h += g3 * MLP(norm3(h))          channel MLP
U-Net-like long skips: the output of block i (first half) is added, with a learned
per-channel gate, to the input of block n_layers - 1 - i (second half). A gated add costs one
elementwise pass; concat + linear would cost 2 D^2 per token per skip.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from engine.config import ModelConfig
from engine.denoiser import DenoiserBase
from engine.fourier_mlp import ComplexFourierMLP
from engine.layers import AdaLN, ChannelMLP, modulated_norm
from engine.ssm import BidirectionalSSM


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

    def forward(self, h: Tensor, c: Tensor, rows: Tensor | None = None) -> Tensor:
        """h (B, L, D) -> (B, L, D); with `rows` (n,) only those positions come out, (B, n, D):
        the channel MLP, the last sublayer, works position by position, so it runs on them only."""
        m = self.adaln(c)  # (B, 3, 3, 1, D): sublayer x (shift, scale, gate)
        inplace = not torch.is_grad_enabled()
        for i, sub in enumerate((self.ssm, self.fourier, self.mlp)):
            if i == 2 and rows is not None:
                h = h[:, rows]  # (B, n, D) a copy: ours to change in place
            y = sub(modulated_norm(h, m[:, i, 0], m[:, i, 1]))  # (B, L, D)
            if inplace and i > 0:  # h is our own tensor after the first residual
                h.addcmul_(m[:, i, 2], y)
            else:
                h = torch.addcmul(h, m[:, i, 2], self.drop(y))
        return h


class SFDLM(DenoiserBase):
    """State-Fourier diffusion LM denoiser (the layers: engine.ssm, engine.fourier_mlp)."""

    features_of_rows = True  # features(..., rows=) gives those positions only (engine.sampler)

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__(cfg, SFDLMBlock)
        self.n_skips = cfg.n_layers // 2
        self.skip_gate = nn.Parameter(torch.full((self.n_skips, cfg.d_model), 0.5))  # (S, D)

    def features(self, x_t: Tensor, t: Tensor, clean: Tensor, rows: Tensor | None = None) -> Tensor:
        """Final-normed hidden states (B, L, D); logits = head(features). With `rows` (n,), those
        positions only, (B, n, D): the sampler needs the free ones, and everything after the last
        block's Fourier mix works position by position."""
        h, c = self.embed_inputs(x_t, t, clean)  # (B, L, D), (B, D)
        n = len(self.blocks)
        skips: list[Tensor] = []
        for i, block in enumerate(self.blocks):
            j = n - 1 - i  # partner block in the first half
            if j < self.n_skips and i >= n - self.n_skips:
                h = torch.addcmul(h, self.skip_gate[j], skips[j])
            h = block(h, c, rows) if i == n - 1 and rows is not None else block(h, c)
            if i < self.n_skips:
                skips.append(h)
        return self.final_norm(h, c)
