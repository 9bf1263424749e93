"""Transformer baselines of equal width and depth: a denoiser and a causal LM with a KV cache.

Glossary
  B, L, D, V  batch, sequence length, model width, vocabulary size
  H, hd       attention heads (cfg.n_heads) and head width D / H
  P           prefix length given to CausalLM.generate (>= 1, e.g. a BOS token)
  c           time conditioning vector (B, D) (denoiser only)

Both use torch.nn.functional.scaled_dot_product_attention (fused, O(L) memory on CPU),
rotary position embeddings (RoPE, Su et al. 2021; works for any length), the same
ChannelMLP as the SFDLM and an output head tied to the token embedding. The denoiser uses
the same time conditioning (sinusoidal -> MLP -> adaLN-Zero) and clean embedding as SFDLM.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from engine.config import ModelConfig
from engine.layers import AdaLN, ChannelMLP, modulated_norm
from engine.denoiser import DenoiserBase

_ROPE_CACHE: dict[tuple, tuple[Tensor, Tensor]] = {}
VETO_TRIES = 8  # CausalLM.generate: draws again after a vetoed one, at most


def rope_tables(length: int, head_dim: int, device: torch.device,
                dtype: torch.dtype, base: float = 10_000.0) -> tuple[Tensor, Tensor]:
    """cos, sin tables (length, head_dim) for rotate-half RoPE, cached per length."""
    key = (length, head_dim, str(device), dtype)
    hit = _ROPE_CACHE.get(key)
    if hit is not None:
        return hit
    inv = base ** (-torch.arange(0, head_dim, 2, dtype=torch.float64) / head_dim)
    ang = torch.outer(torch.arange(length, dtype=torch.float64), inv)  # (L, hd/2)
    ang = torch.cat([ang, ang], dim=-1)
    out = (ang.cos().to(device, dtype), ang.sin().to(device, dtype))
    if len(_ROPE_CACHE) > 16:
        _ROPE_CACHE.clear()
    _ROPE_CACHE[key] = out
    return out


def apply_rope(x: Tensor, cos: Tensor, sin: Tensor) -> Tensor:
    """x (B, H, L, hd) rotated by position tables cos/sin (L, hd)."""
    half = x.shape[-1] // 2
    rot = torch.cat([-x[..., half:], x[..., :half]], dim=-1)
    return x * cos + rot * sin


class SelfAttention(nn.Module):
    def __init__(self, d_model: int, n_heads: int) -> None:
        super().__init__()
        assert d_model % n_heads == 0
        self.h, self.hd = n_heads, d_model // n_heads
        self.qkv = nn.Linear(d_model, 3 * d_model)
        self.proj = nn.Linear(d_model, d_model)

    def heads(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        b, length, _ = x.shape
        qkv = self.qkv(x).view(b, length, 3, self.h, self.hd).permute(2, 0, 3, 1, 4)
        return qkv[0], qkv[1], qkv[2]  # each (B, H, L, hd)

    def forward(self, x: Tensor, causal: bool) -> Tensor:
        b, length, d = x.shape
        q, k, v = self.heads(x)
        cos, sin = rope_tables(length, self.hd, x.device, x.dtype)
        q, k = apply_rope(q, cos, sin), apply_rope(k, cos, sin)
        o = F.scaled_dot_product_attention(q, k, v, is_causal=causal)  # (B, H, L, hd)
        return self.proj(o.transpose(1, 2).reshape(b, length, d))


class DenoiserBlock(nn.Module):
    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.adaln = AdaLN(cfg.d_model, 2)
        self.attn = SelfAttention(cfg.d_model, cfg.n_heads)
        self.mlp = ChannelMLP(cfg.d_model, cfg.mlp_mult)
        self.drop = nn.Dropout(cfg.dropout)

    def forward(self, h: Tensor, c: Tensor) -> Tensor:
        m = self.adaln(c)  # (B, 2, 3, 1, D)
        y = self.attn(modulated_norm(h, m[:, 0, 0], m[:, 0, 1]), causal=False)
        h = torch.addcmul(h, m[:, 0, 2], self.drop(y))
        y = self.mlp(modulated_norm(h, m[:, 1, 0], m[:, 1, 1]))
        return torch.addcmul(h, m[:, 1, 2], self.drop(y))


class TransformerDenoiser(DenoiserBase):
    """Same interface as SFDLM: forward(x_t, t, clean) -> logits; features / head."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__(cfg, DenoiserBlock)

    def features(self, x_t: Tensor, t: Tensor, clean: Tensor) -> Tensor:
        h, c = self.embed_inputs(x_t, t, clean)  # (B, L, D), (B, D)
        for block in self.blocks:
            h = block(h, c)
        return self.final_norm(h, c)


class CausalBlock(nn.Module):
    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.ln1 = nn.LayerNorm(cfg.d_model)
        self.attn = SelfAttention(cfg.d_model, cfg.n_heads)
        self.ln2 = nn.LayerNorm(cfg.d_model)
        self.mlp = ChannelMLP(cfg.d_model, cfg.mlp_mult)
        self.drop = nn.Dropout(cfg.dropout)

    def forward(self, h: Tensor) -> Tensor:
        h = h + self.drop(self.attn(self.ln1(h), causal=True))
        return h + self.drop(self.mlp(self.ln2(h)))

    def prefill(self, h: Tensor, k_cache: Tensor, v_cache: Tensor) -> Tensor:
        """Causal pass over a prefix (B, P, D), writing keys/values into positions 0..P-1."""
        b, p, d = h.shape
        a = self.attn
        q, k, v = a.heads(self.ln1(h))
        cos, sin = rope_tables(p, a.hd, h.device, h.dtype)
        q, k = apply_rope(q, cos, sin), apply_rope(k, cos, sin)
        k_cache[:, :, :p] = k
        v_cache[:, :, :p] = v
        o = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        h = h + a.proj(o.transpose(1, 2).reshape(b, p, d))
        return h + self.mlp(self.ln2(h))

    def step(self, h: Tensor, pos: int, cos: Tensor, sin: Tensor, k_cache: Tensor,
             v_cache: Tensor) -> Tensor:
        """One new token (B, 1, D) at position `pos` attending to the cache 0..pos."""
        b, _, d = h.shape
        a = self.attn
        q, k, v = a.heads(self.ln1(h))  # (B, H, 1, hd)
        q, k = apply_rope(q, cos, sin), apply_rope(k, cos, sin)
        k_cache[:, :, pos:pos + 1] = k
        v_cache[:, :, pos:pos + 1] = v
        o = F.scaled_dot_product_attention(q, k_cache[:, :, :pos + 1], v_cache[:, :, :pos + 1])
        h = h + a.proj(o.reshape(b, 1, d))
        return h + self.mlp(self.ln2(h))


def sample_next(logits: Tensor, temperature: float, top_p: float,
                generator: torch.Generator | None) -> Tensor:
    """Token ids (B,) from logits (B, V): greedy when temperature <= 0, else top-p sampling."""
    if temperature <= 0:
        return logits.argmax(-1)
    probs = torch.softmax(logits.float() / temperature, dim=-1)
    if top_p < 1.0:
        sp, idx = probs.sort(-1, descending=True)
        keep = sp.cumsum(-1) - sp < top_p  # always keeps the most likely token
        sp = sp * keep
        choice = torch.multinomial(sp, 1, generator=generator)  # (B, 1), renormalised inside
        return idx.gather(-1, choice).squeeze(-1)
    return torch.multinomial(probs, 1, generator=generator).squeeze(-1)


class CausalLM(nn.Module):
    """Left-to-right transformer LM of the same width / depth, with a preallocated KV cache."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.embed = nn.Embedding(cfg.vocab_size, cfg.d_model)
        nn.init.normal_(self.embed.weight, std=0.02)
        self.blocks = nn.ModuleList(CausalBlock(cfg) for _ in range(cfg.n_layers))
        self.ln_f = nn.LayerNorm(cfg.d_model)

    def features(self, x: Tensor) -> Tensor:
        h = self.embed(x)  # (B, L, D)
        for block in self.blocks:
            h = block(h)
        return self.ln_f(h)

    def head(self, h: Tensor) -> Tensor:
        return F.linear(h, self.embed.weight)

    def forward(self, x: Tensor) -> Tensor:
        """Teacher-forced logits (B, L, V); position i sees tokens 0..i."""
        return self.head(self.features(x))

    @torch.inference_mode()
    def generate(self, prefix: Tensor, n_new: int, temperature: float = 1.0, top_p: float = 1.0,
                 generator: torch.Generator | None = None, banned: Tensor | None = None,
                 veto: Callable[[list[int], int], bool] | None = None) -> Tensor:
        """Decode n_new tokens after `prefix` (B, P), P >= 1 -> (B, P + n_new).

        temperature <= 0 is greedy. The KV cache (layers, B, H, P + n_new, hd) is allocated once.
        `banned` ids (m,) are never drawn. `veto(ids so far, id)` (B = 1 only) rejects a draw,
        which is then drawn again without that id, up to VETO_TRIES times (the rules the SFDLM's
        sampler keeps in a template's slots, for a like-for-like comparison).
        """
        if veto is not None and prefix.shape[0] != 1:
            raise ValueError("veto works on one sequence at a time (B = 1)")
        b, p = prefix.shape
        assert p >= 1, "generate needs at least one prefix token (e.g. BOS)"
        total = p + n_new
        out = torch.empty(b, total, dtype=prefix.dtype, device=prefix.device)
        out[:, :p] = prefix
        if n_new == 0:
            return out
        w = self.embed.weight
        hd = self.blocks[0].attn.hd
        shape = (b, self.cfg.n_heads, total, hd)
        ks = [torch.empty(shape, dtype=w.dtype, device=w.device) for _ in self.blocks]
        vs = [torch.empty(shape, dtype=w.dtype, device=w.device) for _ in self.blocks]
        h = self.embed(prefix)  # (B, P, D)
        for block, k, v in zip(self.blocks, ks, vs):
            h = block.prefill(h, k, v)
        logits = self.head(self.ln_f(h[:, -1]))  # (B, V)
        cos_all, sin_all = rope_tables(total, hd, w.device, w.dtype)
        for pos in range(p, total):
            if banned is not None and banned.numel():
                logits = logits.index_fill(-1, banned.to(logits.device), -math.inf)
            tok = sample_next(logits, temperature, top_p, generator)  # (B,)
            for _ in range(VETO_TRIES if veto is not None else 0):
                if not veto(out[0, :pos].tolist(), int(tok[0])):
                    break
                logits = logits.index_fill(-1, tok, -math.inf)
                if not bool(torch.isfinite(logits).any()):
                    break
                tok = sample_next(logits, temperature, top_p, generator)
            out[:, pos] = tok
            if pos == total - 1:
                break
            h = self.embed(tok[:, None])  # (B, 1, D)
            cos, sin = cos_all[pos:pos + 1], sin_all[pos:pos + 1]
            for block, k, v in zip(self.blocks, ks, vs):
                h = block.step(h, pos, cos, sin, k, v)
            logits = self.head(self.ln_f(h[:, 0]))
        return out
