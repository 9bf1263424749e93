"""engine.model: shapes, no attention (structure AND execution), clean embedding, tied head,
determinism, any length, gradients, and a tiny model that overfits one denoising batch."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode

from engine.baseline import TransformerDenoiser
from engine.build import build_model, count_parameters
from engine.config import ModelConfig
from engine.model import SFDLM

TINY = ModelConfig(vocab_size=50, d_model=32, n_layers=4, d_state=8, mlp_mult=2,
                   fourier_blocks=4, fourier_mult=2, n_heads=4, time_dim=16)


def inputs(batch: int, length: int, seed: int = 0, vocab: int = 50):
    g = torch.Generator().manual_seed(seed)
    x = torch.randint(0, vocab, (batch, length), generator=g)
    t = torch.rand(batch, generator=g)
    clean = torch.rand(batch, length, generator=g) < 0.3
    return x, t, clean


def model(seed: int = 0, cfg: ModelConfig = TINY) -> nn.Module:
    torch.manual_seed(seed)
    return build_model(cfg)


def randomise_gates(m: nn.Module) -> None:
    """adaLN-Zero makes every block the identity at init; perturb so blocks do something."""
    g = torch.Generator().manual_seed(123)
    with torch.no_grad():
        for name, p in m.named_parameters():
            if "adaln.mod" in name or "final.mod" in name:
                p.copy_(torch.randn(p.shape, generator=g) * 0.2)


def test_shapes_and_dtype() -> None:
    m = model()
    x, t, clean = inputs(3, 20)
    logits = m(x, t, clean)
    assert logits.shape == (3, 20, TINY.vocab_size) and logits.dtype == torch.float32
    h = m.features(x, t, clean)
    assert h.shape == (3, 20, TINY.d_model)
    assert torch.allclose(m.head(h), logits)
    assert torch.allclose(m.head(h[:, 5]), logits[:, 5])  # logits only where needed


# ---------------------------------------------------------------- no attention


def attention_in_tree(m: nn.Module) -> list[str]:
    banned = (nn.MultiheadAttention, nn.Transformer, nn.TransformerEncoderLayer,
              nn.TransformerDecoderLayer, nn.TransformerEncoder, nn.TransformerDecoder)
    return [name for name, mod in m.named_modules()
            if isinstance(mod, banned) or "attn" in type(mod).__name__.lower()
            or "attention" in type(mod).__name__.lower()]


class AttentionDetector(TorchDispatchMode):
    """Records every aten op that looks like attention over the sequence: an op named
    *attention*, a softmax over a (.., L, L) tensor, or a matmul whose output ends in (L, L)."""

    def __init__(self, length: int) -> None:
        super().__init__()
        self.length = length
        self.hits: list[str] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        name = str(func.overloadpacket.__name__)
        L = self.length
        if "attention" in name:
            self.hits.append(name)
        outs = out if isinstance(out, (tuple, list)) else (out,)
        for o in outs:
            if isinstance(o, torch.Tensor) and o.dim() >= 2 and tuple(o.shape[-2:]) == (L, L):
                if any(k in name for k in ("softmax", "bmm", "mm", "matmul", "baddbmm", "addmm")):
                    self.hits.append(f"{name}{tuple(o.shape)}")
        return out


def run_detector(m: nn.Module, length: int) -> list[str]:
    x, t, clean = inputs(2, length)
    det = AttentionDetector(length)
    with det, torch.no_grad():
        m(x, t, clean)
    return det.hits


def raising(*a, **k):
    raise AssertionError("attention was called")


@pytest.mark.parametrize("length", [37, 100])  # 37: DFT-matrix path; 100: FFT path
def test_no_attention_in_sfdlm(length: int, monkeypatch: pytest.MonkeyPatch) -> None:
    m = model()
    randomise_gates(m)
    assert attention_in_tree(m) == []
    assert run_detector(m, length) == []
    monkeypatch.setattr(F, "scaled_dot_product_attention", raising)
    monkeypatch.setattr(F, "multi_head_attention_forward", raising)
    x, t, clean = inputs(2, length)
    m(x, t, clean)  # would raise if attention were called


def test_attention_checks_catch_the_transformer(monkeypatch: pytest.MonkeyPatch) -> None:
    """The same three checks flag the transformer baseline, so they can fail."""
    m = model(cfg=TINY.__class__(**{**TINY.__dict__, "arch": "transformer"}))
    assert attention_in_tree(m)  # SelfAttention modules
    assert run_detector(m, 37)  # the fused attention op at dispatch level
    with torch.nn.attention.sdpa_kernel(torch.nn.attention.SDPBackend.MATH):
        hits = run_detector(m, 37)  # the unfused math path: L x L matmul + softmax
    assert any("softmax" in h or "mm" in h for h in hits)
    monkeypatch.setattr(F, "scaled_dot_product_attention", raising)
    x, t, clean = inputs(2, 37)
    with pytest.raises(AssertionError, match="attention was called"):
        m(x, t, clean)
    mha = nn.MultiheadAttention(32, 4, batch_first=True)
    assert attention_in_tree(nn.Sequential(mha))


# ---------------------------------------------------------------- behaviour


def test_clean_embedding_changes_clean_positions() -> None:
    m = model()
    x, t, _ = inputs(1, 12)
    none = torch.zeros(1, 12, dtype=torch.bool)
    some = none.clone()
    some[0, 4] = True
    a, b = m(x, t, none), m(x, t, some)
    assert not torch.allclose(a[0, 4], b[0, 4])
    assert torch.allclose(a[0, 0], b[0, 0])  # blocks are the identity at init: local only
    randomise_gates(m)
    assert not torch.allclose(m(x, t, none)[0, 4], m(x, t, some)[0, 4])


def test_output_tied_to_embedding() -> None:
    m = model()
    assert isinstance(m, SFDLM)
    h = torch.randn(2, 3, TINY.d_model)
    assert torch.allclose(m.head(h), h @ m.embed.weight.T)
    n_weights = [p for p in m.parameters() if p.shape == (TINY.vocab_size, TINY.d_model)]
    assert len(n_weights) == 1  # no separate output matrix
    before = m.head(h)
    with torch.no_grad():
        m.embed.weight[7] += 1.0  # editing the embedding row edits that token's logit
    after = m.head(h)
    assert torch.allclose(after[..., 7], before[..., 7] + h.sum(-1), atol=1e-5)
    assert torch.allclose(after[..., 6], before[..., 6])


def test_deterministic_init_and_forward() -> None:
    x, t, clean = inputs(2, 30)
    a, b = model(seed=5), model(seed=5)
    randomise_gates(a)
    randomise_gates(b)
    assert torch.equal(a(x, t, clean), b(x, t, clean))
    c = model(seed=6)
    randomise_gates(c)
    assert not torch.equal(a(x, t, clean), c(x, t, clean))


@pytest.mark.parametrize("length", [1, 5, 300])
def test_any_length(length: int) -> None:
    m = model()
    randomise_gates(m)
    x, t, clean = inputs(2, length)
    out = m(x, t, clean)
    assert out.shape == (2, length, TINY.vocab_size) and torch.isfinite(out).all()
    with torch.inference_mode():  # cached kernels give the same result
        assert torch.allclose(m(x, t, clean), out, atol=1e-5)
        assert torch.allclose(m(x, t, clean), out, atol=1e-5)


@pytest.mark.parametrize("length", [7, 300])
def test_features_of_some_rows_are_those_rows_of_all(length: int) -> None:
    m = model()
    randomise_gates(m)
    x, t, clean = inputs(1, length)
    rows = torch.tensor(sorted({0, length // 2, length - 1, 3 % length}))
    with torch.inference_mode():
        whole = m.features(x, t, clean)  # (1, L, D)
        some = m.features(x, t, clean, rows=rows)  # (1, n, D)
    assert some.shape == (1, rows.numel(), TINY.d_model)
    torch.testing.assert_close(some, whole[:, rows], atol=1e-5, rtol=1e-5)
    assert SFDLM.features_of_rows and not getattr(TransformerDenoiser, "features_of_rows", False)


def test_gradient_reaches_every_parameter() -> None:
    """adaLN-Zero gates block the gradient to sublayers at step 0 (as in DiT), so take two
    optimiser steps first; then every parameter must receive a finite, non-zero gradient."""
    m = model()
    x, t, clean = inputs(2, 24)
    opt = torch.optim.SGD(m.parameters(), lr=0.05)
    for _ in range(3):
        opt.zero_grad()
        F.cross_entropy(m(x, t, clean).flatten(0, 1), x.flatten()).backward()
        opt.step()
    opt.zero_grad()
    F.cross_entropy(m(x, t, clean).flatten(0, 1), x.flatten()).backward()
    for name, p in m.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name
        assert p.grad.abs().sum() > 0, name


def test_build_model_and_count() -> None:
    for arch, cls_name in [("sfdlm", "SFDLM"), ("transformer", "TransformerDenoiser"),
                           ("causal", "CausalLM")]:
        m = build_model(TINY.__class__(**{**TINY.__dict__, "arch": arch}))
        assert type(m).__name__ == cls_name
        assert count_parameters(m) == sum(p.numel() for p in m.parameters())
    with pytest.raises(ValueError):
        build_model(TINY.__class__(**{**TINY.__dict__, "arch": "nope"}))


def test_tiny_model_overfits_one_denoising_batch() -> None:
    """Uniform-noise corruption of half the positions; CE to x0 at corrupted positions."""
    torch.manual_seed(0)
    cfg = TINY.__class__(**{**TINY.__dict__, "vocab_size": 24, "n_layers": 2})
    m = SFDLM(cfg)
    g = torch.Generator().manual_seed(1)
    x0 = torch.randint(0, 24, (4, 32), generator=g)
    corrupt = torch.rand(4, 32, generator=g) < 0.5
    x_t = torch.where(corrupt, torch.randint(0, 24, (4, 32), generator=g), x0)
    t = torch.full((4,), 0.5)
    clean = torch.zeros(4, 32, dtype=torch.bool)
    opt = torch.optim.Adam(m.parameters(), lr=1e-2)
    first = None
    for _ in range(150):
        opt.zero_grad()
        loss = F.cross_entropy(m(x_t, t, clean)[corrupt], x0[corrupt])
        loss.backward()
        opt.step()
        first = loss.item() if first is None else first
    assert loss.item() < 0.1 * first, (first, loss.item())


def test_training_after_sampling_in_inference_mode() -> None:
    """Caches filled while drafting under inference mode must not leak into a training step."""
    from engine.config import DiffusionConfig, SamplerConfig
    from engine.diffusion import make_diffusion
    from engine.sampler import sample

    cfg = ModelConfig(vocab_size=50, d_model=32, n_layers=2, d_state=8, fourier_blocks=2, n_heads=2, time_dim=16)
    torch.manual_seed(0)
    model = build_model(cfg)
    d = make_diffusion(DiffusionConfig(), cfg.vocab_size, 1)
    for length in (12, 200):  # the short (DFT-matrix) path and the FFT path
        for _ in sample(model, d, SamplerConfig(steps=2), length=length):
            pass
        x0 = torch.randint(0, cfg.vocab_size, (2, length))
        out = d.loss(model, x0, None, torch.Generator().manual_seed(0))
        out.loss.backward()
        assert all(p.grad is not None for p in model.parameters() if p.requires_grad)
        model.zero_grad()
