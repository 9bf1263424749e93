"""bench.scaling: the live-memory probe sees what a forward allocates, and the CLI's JSON rows."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from bench import scaling

ROOT = Path(__file__).resolve().parent.parent


class Allocates(torch.nn.Module):
    """Holds a 64 MiB intermediate, returns a small result."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        big = torch.empty(16 * 2**20).fill_(x)  # 64 MiB
        return big[:10].clone()


@pytest.mark.skipif(scaling.heap_in_use() is None, reason="glibc mallinfo2 is not available here")
def test_live_peak_sees_an_intermediate_tensor() -> None:
    model = Allocates()
    model(torch.tensor(2.0))  # warm (thread pools and allocator arenas exist), as in the benchmark
    live = scaling.live_peak_forward(model, (torch.tensor(2.0),))
    assert 60 <= live <= 70  # the 64 MiB intermediate, not what survives the call


def test_cli_json_rows(tmp_path: Path) -> None:
    out = subprocess.run([sys.executable, "-m", "bench.scaling", "--lengths", "16,40", "--repeats", "1", "--memory-repeats", "1",
                          "--d-model", "32", "--layers", "2", "--vocab", "64", "--threads", "1", "--json"],
                         cwd=ROOT, capture_output=True, text=True, check=True, timeout=300)
    rows = json.loads(out.stdout.strip().splitlines()[-1])
    assert [r["L"] for r in rows] == [16, 40]
    for r in rows:
        assert r["sfdlm_ms"] > 0 and r["transformer_ms"] > 0
        assert r["sfdlm_peak_mb"] >= 0 and r["transformer_peak_mb"] >= 0
        if scaling.heap_in_use() is not None:
            assert r["sfdlm_live_mb"] > 0 and r["transformer_live_mb"] > 0


def test_build_takes_the_ssm_state_size() -> None:
    """--d-state reaches the SFDLM's SSM layers (d_state // 2 complex modes)."""
    args = scaling.parse_args(["--d-model", "16", "--layers", "2", "--vocab", "32", "--d-state", "8"])
    model = scaling.build("sfdlm", args)
    assert {block.ssm.n_modes for block in model.blocks} == {4}
    assert model.cfg.d_state == 8


def test_defaults_are_the_shipped_models_state_size_and_vocabulary() -> None:
    """The benchmark measures the denoiser the product ships (at the issue's width and depth):
    its defaults must follow assets/model when that model changes."""
    shipped = json.loads((ROOT / "assets" / "model" / "config.json").read_text())["model"]
    args = scaling.parse_args([])
    assert (args.d_state, args.vocab) == (shipped["d_state"], shipped["vocab_size"])
    assert (args.d_model, args.layers) == (256, 6)
