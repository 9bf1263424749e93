"""`python -m engine.tiny --out DIR`: build the tiny, randomly initialised model folder.

It is for tests and smoke runs only (its drafts are noise): a small byte-level BPE trained on
the project's own templates and the few sentences below, and an untrained SFDLM.
The trained default model is built by `engine.train` (a later issue).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch

from engine import checkpoint
from engine.config import DiffusionConfig, ModelConfig, SamplerConfig
from engine.tokenizer import Tokenizer

TEMPLATES = Path(__file__).resolve().parent.parent / "assets" / "templates"

# Written for this project: the register of the reports the product drafts.
SENTENCES = (
    "During routine inspection found the left main landing gear actuator leaking hydraulic fluid.",
    "Removed and replaced the actuator, leak check good, aircraft returned to service.",
    "Crew reported intermittent fuel quantity indication on the number two tank.",
    "Found corrosion on the wire harness connector behind the access panel; cleaned and treated.",
    "Pump pressure below limits during functional test; replaced the pump and the filter element.",
    "Crack found in the bracket at the attach fitting, measured 0.25 inch, beyond repair limits.",
    "Engine oil consumption above normal; inspected the seals and found the gasket damaged.",
    "Shift handover: two work orders open, the compressor is out of service pending parts.",
    "Torque checked on all fasteners per the maintenance manual, no defects noted.",
    "Smoke reported in the cabin; traced to a chafed wire at the galley power supply.",
    "Brake wear pins at minimum length; replaced the brake assembly and tested the system.",
    "Vibration noted during run-up; balanced the fan and verified levels within limits.",
)


def corpus() -> list[str]:
    texts = [p.read_text(encoding="utf-8") for p in sorted(TEMPLATES.glob("*.txt"))]
    return texts + list(SENTENCES)


def build_tiny_tokenizer(vocab_size: int = 512) -> Tokenizer:
    return Tokenizer.train(corpus() * 4, vocab_size=vocab_size, min_frequency=2)


def tiny_config(vocab_size: int) -> ModelConfig:
    return ModelConfig(vocab_size=vocab_size, d_model=64, n_layers=2, d_state=16, mlp_mult=2, fourier_blocks=4, n_heads=2, time_dim=32)


def build_tiny(out: str | Path, seed: int = 0) -> str:
    """Write the tiny model folder to `out`; returns its checksum."""
    from engine.build import build_model

    tok = build_tiny_tokenizer()
    cfg = tiny_config(tok.vocab_size)
    torch.manual_seed(seed)
    model = build_model(cfg)
    return checkpoint.save(
        out,
        model,
        cfg,
        tok,
        diffusion_cfg=DiffusionConfig(),
        sampler_cfg=SamplerConfig(steps=16),
        name="tiny-random",
        meta={"trained": False, "note": "randomly initialised; for tests and smoke runs only"},
    )


def main(argv: Sequence[str] | None = None) -> int:
    from engine.cli import Parser, one_line, out_path

    p = Parser(prog="python -m engine.tiny", description=__doc__.splitlines()[0])
    p.add_argument("--out", type=out_path, default=Path("assets/tiny"), help="model folder to write (default assets/tiny)")
    p.add_argument("--seed", type=int, default=0, help="seed of the random initialisation")
    args = p.parse_args(argv)
    try:
        print(build_tiny(args.out, args.seed))
    except OSError as exc:  # a folder that cannot be made or written, found only when writing
        p.exit(2, f"{p.prog}: error: cannot write {one_line(str(args.out))!r}: {exc.strerror or exc}\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
