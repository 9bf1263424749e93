"""engine.baseline: interface parity with SFDLM, causal masking, KV-cache decoding."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from engine.baseline import CausalLM, TransformerDenoiser, sample_next
from engine.build import build_model, count_parameters
from engine.config import ModelConfig
from engine.model import SFDLM

TINY = ModelConfig(vocab_size=40, d_model=32, n_layers=3, d_state=8, mlp_mult=2,
                   fourier_blocks=4, fourier_mult=2, n_heads=4, time_dim=16)


def make(arch: str, seed: int = 0, cfg: ModelConfig = TINY) -> torch.nn.Module:
    torch.manual_seed(seed)
    return build_model(dataclasses.replace(cfg, arch=arch))


def test_denoiser_interface_parity_with_sfdlm() -> None:
    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, 40, (2, 11), generator=g)
    t = torch.rand(2, generator=g)
    clean = torch.zeros(2, 11, dtype=torch.bool)
    clean[:, 3] = True
    for m in (make("sfdlm"), make("transformer")):
        logits = m(x, t, clean)
        h = m.features(x, t, clean)
        assert logits.shape == (2, 11, 40) and h.shape == (2, 11, 32)
        assert torch.allclose(m.head(h), logits)
        assert torch.allclose(m.head(h), h @ m.embed.weight.T)  # tied output
        no_clean = m(x, t, torch.zeros_like(clean))
        assert not torch.allclose(no_clean[:, 3], logits[:, 3])  # clean embedding is used
    for length in (1, 5, 300):  # any length (RoPE has no maximum)
        assert make("transformer")(x[:, :1].repeat(1, length), t,
                                   torch.zeros(2, length, dtype=torch.bool)).shape[1] == length


def test_denoiser_is_bidirectional() -> None:
    m = make("transformer")
    with torch.no_grad():  # open the adaLN-Zero gates so attention contributes
        for blk in m.blocks:
            blk.adaln.mod.bias.normal_(0, 0.5)
    x = torch.randint(0, 40, (1, 10), generator=torch.Generator().manual_seed(1))
    t, clean = torch.rand(1), torch.zeros(1, 10, dtype=torch.bool)
    y = x.clone()
    y[0, 8] = (x[0, 8] + 1) % 40
    assert not torch.allclose(m(x, t, clean)[0, 2], m(y, t, clean)[0, 2])


def test_causal_mask_respected() -> None:
    m = make("causal")
    x = torch.randint(0, 40, (2, 16), generator=torch.Generator().manual_seed(2))
    y = x.clone()
    y[:, 9] = (x[:, 9] + 3) % 40
    a, b = m(x), m(y)
    assert a.shape == (2, 16, 40)
    assert torch.allclose(a[:, :9], b[:, :9], atol=1e-6)
    assert not torch.allclose(a[:, 9:], b[:, 9:])


def nocache_generate(m: CausalLM, prefix: torch.Tensor, n_new: int, temperature: float,
                     top_p: float, generator: torch.Generator | None) -> torch.Tensor:
    """The obvious loop: re-run the whole sequence for every new token."""
    seq = prefix
    with torch.no_grad():
        for _ in range(n_new):
            tok = sample_next(m(seq)[:, -1], temperature, top_p, generator)
            seq = torch.cat([seq, tok[:, None]], dim=1)
    return seq


@pytest.mark.parametrize("prefix_len", [1, 6])
def test_generate_with_kv_cache_equals_no_cache_greedy(prefix_len: int) -> None:
    m = make("causal")
    prefix = torch.randint(0, 40, (3, prefix_len), generator=torch.Generator().manual_seed(3))
    fast = m.generate(prefix, 20, temperature=0.0)
    slow = nocache_generate(m, prefix, 20, 0.0, 1.0, None)
    assert fast.shape == (3, prefix_len + 20)
    assert torch.equal(fast, slow)


def test_generate_with_kv_cache_equals_no_cache_sampling() -> None:
    m = make("causal")
    prefix = torch.zeros(2, 1, dtype=torch.long)  # a BOS token
    fast = m.generate(prefix, 25, temperature=1.0, top_p=0.9,
                      generator=torch.Generator().manual_seed(7))
    slow = nocache_generate(m, prefix, 25, 1.0, 0.9, torch.Generator().manual_seed(7))
    assert torch.equal(fast, slow)
    again = m.generate(prefix, 25, temperature=1.0, top_p=0.9,
                       generator=torch.Generator().manual_seed(7))
    assert torch.equal(fast, again)  # deterministic given the generator
    assert torch.equal(m.generate(prefix, 0), prefix)


def test_banned_ids_are_never_drawn_and_a_veto_draws_again() -> None:
    m = make("causal")
    prefix = torch.zeros(1, 1, dtype=torch.long)
    plain = m.generate(prefix, 30, temperature=0.0)[0, 1:].tolist()
    favourite = max(set(plain), key=plain.count)  # what greedy decoding writes most
    banned = m.generate(prefix, 30, temperature=0.0, banned=torch.tensor([favourite]))[0, 1:].tolist()
    assert favourite not in banned
    seen: list[tuple[int, int]] = []

    def no_repeat(ids: list[int], t: int) -> bool:  # veto a token equal to the one before it
        seen.append((len(ids), t))
        return t == ids[-1]

    for temperature in (0.0, 1.0):
        out = m.generate(prefix, 40, temperature=temperature, generator=torch.Generator().manual_seed(1), veto=no_repeat)
        ids = out[0].tolist()
        assert all(a != b for a, b in zip(ids[1:], ids[2:])), "a vetoed draw was kept"
    assert seen and seen[0][0] == 1, "the veto sees the ids written so far"
    with pytest.raises(ValueError, match="B = 1"):
        m.generate(torch.zeros(2, 1, dtype=torch.long), 3, veto=no_repeat)


def test_top_p_keeps_only_the_nucleus() -> None:
    logits = torch.log(torch.tensor([[0.6, 0.3, 0.05, 0.05]]))
    g = torch.Generator().manual_seed(0)
    draws = {int(sample_next(logits, 1.0, 0.5, g)) for _ in range(50)}
    assert draws == {0}
    draws = {int(sample_next(logits, 1.0, 0.85, g)) for _ in range(200)}
    assert draws == {0, 1}


def test_parameter_counts_at_equal_width_and_depth() -> None:
    """Reported in the test output (-s): SFDLM vs transformer at the default d=256, 6 layers."""
    cfg = ModelConfig()
    counts = {arch: count_parameters(make(arch, cfg=cfg)) for arch in ("sfdlm", "transformer",
                                                                        "causal")}
    print(f"\nparameters at d={cfg.d_model}, layers={cfg.n_layers}, V={cfg.vocab_size}: {counts}")
    emb = cfg.vocab_size * cfg.d_model
    ratio = (counts["sfdlm"] - emb) / (counts["transformer"] - emb)  # non-embedding
    assert 0.8 <= ratio <= 1.4, ratio
    assert 0.9 <= counts["sfdlm"] / counts["transformer"] <= 1.25
    assert isinstance(make("sfdlm"), SFDLM) and isinstance(make("transformer"),
                                                           TransformerDenoiser)
