"""bench.layers_ab: the base checkout's layers really replace the model's, with the same weights,
and the CLI reports every part (tiny shapes; the base is this checkout itself)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import torch

from bench import layers_ab
from engine.build import build_model
from engine.config import ModelConfig

ROOT = Path(__file__).resolve().parent.parent
TINY = ModelConfig(vocab_size=64, d_model=32, n_layers=2, d_state=8, fourier_blocks=4, time_dim=16)


def test_base_layers_swapped_in_with_the_same_weights() -> None:
    mod = layers_ab.load_layers(ROOT)
    assert mod.__name__ == "bench_base_layers" and mod.BidirectionalSSM is not layers_ab.here.BidirectionalSSM
    torch.manual_seed(0)
    model = build_model(TINY)
    x_t = torch.randint(3, 64, (2, 80))
    t, clean = torch.rand(2), torch.zeros(2, 80, dtype=torch.bool)
    with torch.no_grad():
        want = model(x_t, t, clean)
    swapped = layers_ab.with_layers(model, mod, TINY)
    assert all(type(b.ssm) is mod.BidirectionalSSM and type(b.fourier) is mod.ComplexFourierMLP
               for b in swapped.blocks)
    with torch.no_grad():
        got = swapped(x_t, t, clean)
    assert torch.allclose(got, want, rtol=1e-5, atol=1e-5)


def test_cli_reports_every_part_and_rejects_a_non_checkout(tmp_path: Path) -> None:
    cmd = [sys.executable, "-m", "bench.layers_ab", "--d-model", "32", "--layers", "2", "--vocab", "64",
           "--seq-len", "80", "--batch-size", "2", "--repeats", "1", "--threads", "1"]
    out = subprocess.run([*cmd, "--base", str(ROOT), "--json"], cwd=ROOT, capture_output=True, text=True,
                         check=True, timeout=300)
    parts = json.loads(out.stdout)["parts"]
    assert set(parts) == {"ssm", "fourier", "step"}
    for r in parts.values():
        assert r["base"] > 0 and r["this"] > 0 and r["ratio"] > 0
    bad = subprocess.run([*cmd, "--base", str(tmp_path)], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert bad.returncode == 2 and "not found" in bad.stderr and "Traceback" not in bad.stderr
