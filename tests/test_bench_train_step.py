"""bench.train_step: every part it times does the work it names, and the step's composition and
the Amdahl ceilings are computed from the timings as documented."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from bench import train_step
from bench.quality import matched
from engine.build import build_model
from engine.config import ModelConfig

ROOT = Path(__file__).resolve().parent.parent
TINY = ModelConfig(vocab_size=64, d_model=32, n_layers=2, d_state=8, fourier_blocks=4, time_dim=16)


@pytest.mark.parametrize("noise", ["uniform", "absorbing"])
@pytest.mark.parametrize("arch", ["sfdlm", "transformer"])
def test_each_part_back_propagates_into_its_own_weights(arch: str, noise: str) -> None:
    torch.manual_seed(0)
    model = build_model(matched(TINY, arch))
    diffusion = train_step.training_diffusion(TINY.vocab_size, noise)
    assert diffusion.name == noise and diffusion.forbidden[: train_step.FIRST_ID].all()
    ps = train_step.parts(arch, model, diffusion, 2, 16, torch.Generator().manual_seed(0))
    block = model.blocks[0]
    own = {"ssm": block.ssm.log_dt, "fourier": block.fourier.w1} if arch == "sfdlm" else {"attention": block.attn.qkv.weight}
    assert list(ps) == ["step", *own, "mlp", "head + loss", train_step.UNFUSED]
    checks = {**own, "mlp": block.mlp.up.weight, "head + loss": model.embed.weight,
              train_step.UNFUSED: model.embed.weight}
    grads = {}
    for name, weight in checks.items():
        model.zero_grad(set_to_none=True)
        ps[name]()
        assert weight.grad is not None and weight.grad.abs().sum() > 0, name
        assert all(w.grad is None for w in checks.values() if w is not weight), name  # and nothing else checked
        grads[name] = weight.grad.clone()
    # the fused head + loss and the unfused one are the same computation (the loss's sum carries
    # the 1 - t_min weight of the time integral)
    torch.testing.assert_close(grads["head + loss"], (1 - diffusion.t_min) * grads[train_step.UNFUSED],
                               rtol=1e-4, atol=1e-6 * float(grads["head + loss"].abs().max()))
    before = model.blocks[1].mlp.down.weight.detach().clone()
    ps["step"]()
    assert not torch.equal(before, model.blocks[1].mlp.down.weight)  # the optimizer stepped


def test_summary_is_amdahl_on_the_sfdlm_own_sublayers() -> None:
    res = {"sfdlm": {"ms": {"step": 100.0}, "own_ms_per_step": 40.0},
           "transformer": {"ms": {"step": 120.0}, "own_ms_per_step": 50.0}}
    s = train_step.summary(res)
    assert s["ratio"] == pytest.approx(1.2)
    assert s["ratio_own_2x"] == pytest.approx(120 / 80)
    assert s["ratio_own_free"] == pytest.approx(120 / 60)


def test_cli_json_composition_adds_up() -> None:
    out = subprocess.run([sys.executable, "-m", "bench.train_step", "--d-model", "32", "--layers", "2", "--vocab", "64",
                          "--seq-len", "16", "--batch-size", "2", "--repeats", "1", "--threads", "1", "--json",
                          "--noise", "absorbing"],
                         cwd=ROOT, capture_output=True, text=True, check=True, timeout=300)
    data = json.loads(out.stdout)
    assert data["config"]["seq_len"] == 16 and data["config"]["threads"] == 1 and data["config"]["noise"] == "absorbing"
    models = data["models"]
    assert set(models) == {"sfdlm", "transformer"}
    sf, tr = models["sfdlm"]["parameters"], models["transformer"]["parameters"]
    assert abs(sf - tr) / sf < 0.1  # matched parameter counts, as in bench.quality
    for arch, r in models.items():
        ms, n = r["ms"], r["layers"]
        own = n * sum(ms[p] for p in train_step.OWN[arch])
        assert r["own_ms_per_step"] == pytest.approx(own)
        assert r["rest_ms"] == pytest.approx(ms["step"] - own - n * ms["mlp"] - ms["head + loss"])
        assert r["tokens_per_s"] == pytest.approx(2 * 16 / ms["step"] * 1e3)
    s = data["summary"]
    assert s["ratio"] == pytest.approx(models["transformer"]["ms"]["step"] / models["sfdlm"]["ms"]["step"])
    assert s["ratio"] < s["ratio_own_2x"] < s["ratio_own_free"]
