"""Save and load a model folder: weights, config JSON, tokenizer and a SHA-256 manifest.

A model folder holds
  weights.pt     the state dict (loaded with weights_only=True: no pickled code runs)
  config.json    {"format": 1, "name", "model": ModelConfig, "diffusion": DiffusionConfig,
                  "sampler": SamplerConfig, "meta": {...}}
  tokenizer.json the byte-level BPE (engine.tokenizer)
  manifest.json  {"files": {name: sha256}}; every file is checked on load

`model_id` is "<name>@<first 12 hex of the manifest's own SHA-256>": it names this exact set
of bytes, and is what generation runs record.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from engine.config import DiffusionConfig, ModelConfig, SamplerConfig, from_dict, to_dict
from engine.diffusion import make_diffusion
from engine.tokenizer import EOS, Tokenizer, TokenizerError

FORMAT = 1
FILES = ("weights.pt", "config.json", "tokenizer.json")


class CheckpointError(RuntimeError):
    """A model folder is missing, incomplete, corrupt or of an unknown format."""


@dataclass
class Checkpoint:
    model: nn.Module
    model_cfg: ModelConfig
    diffusion_cfg: DiffusionConfig
    sampler_cfg: SamplerConfig
    tokenizer: Tokenizer
    name: str
    checksum: str  # SHA-256 of manifest.json
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def model_id(self) -> str:
        return f"{self.name}@{self.checksum[:12]}"

    def diffusion(self) -> Any:
        """The noise this model was trained with (see `diffusion_for`)."""
        return diffusion_for(self.diffusion_cfg, self.model_cfg.vocab_size, self.tokenizer)


def diffusion_for(cfg: DiffusionConfig, vocab_size: int, tok: Tokenizer) -> Any:
    """The noise a model is trained, evaluated and sampled with: x̂0 never predicts <pad>,
    <mask> or <bos> (they are not data); <eos> separates documents and stays allowed."""
    return make_diffusion(cfg, vocab_size, tok.mask_id, forbidden_ids=tok.special_ids - {EOS})


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def save(
    folder: str | Path,
    model: nn.Module,
    model_cfg: ModelConfig,
    tokenizer: Tokenizer,
    *,
    diffusion_cfg: DiffusionConfig | None = None,
    sampler_cfg: SamplerConfig | None = None,
    name: str = "sfdlm",
    meta: dict[str, Any] | None = None,
) -> str:
    """Write a model folder; returns the checksum (SHA-256 of the manifest)."""
    if model_cfg.vocab_size != tokenizer.vocab_size:
        raise CheckpointError(
            f"model vocab_size {model_cfg.vocab_size} != tokenizer vocab_size {tokenizer.vocab_size}"
        )
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    torch.save(state, folder / "weights.pt")
    config = {
        "format": FORMAT,
        "name": name,
        "model": to_dict(model_cfg),
        "diffusion": to_dict(diffusion_cfg or DiffusionConfig()),
        "sampler": to_dict(sampler_cfg or SamplerConfig()),
        "meta": meta or {},
    }
    (folder / "config.json").write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
    tokenizer.save(folder / "tokenizer.json")
    manifest = {"files": {f: _sha256(folder / f) for f in FILES}}
    (folder / "manifest.json").write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
    return _sha256(folder / "manifest.json")


def verify(folder: str | Path) -> str:
    """Check that every file is present and matches the manifest; return the checksum."""
    folder = Path(folder)
    if not folder.is_dir():
        raise CheckpointError(f"model folder not found: {folder}")
    mpath = folder / "manifest.json"
    if not mpath.is_file():
        raise CheckpointError(f"model folder {folder} has no manifest.json")
    try:
        files = json.loads(mpath.read_text())["files"]
    except (ValueError, KeyError, TypeError) as exc:
        raise CheckpointError(f"{mpath} is corrupt: {exc}") from exc
    for name in FILES:
        path = folder / name
        if not path.is_file():
            raise CheckpointError(f"model file missing: {path}")
        if files.get(name) != _sha256(path):
            raise CheckpointError(f"model file corrupt (SHA-256 differs from manifest): {path}")
    return _sha256(mpath)


def load(folder: str | Path, device: str | torch.device = "cpu") -> Checkpoint:
    """Load and verify a model folder. Every failure is a CheckpointError naming the file."""
    from engine.model import build_model  # the network is only needed once a folder is read

    folder = Path(folder)
    checksum = verify(folder)
    cpath = folder / "config.json"
    try:
        config = json.loads(cpath.read_text())
        if config.get("format") != FORMAT:
            raise CheckpointError(f"{cpath}: unknown format {config.get('format')!r} (expected {FORMAT})")
        model_cfg = from_dict(ModelConfig, config["model"])
        diffusion_cfg = from_dict(DiffusionConfig, config.get("diffusion", {}))
        sampler_cfg = from_dict(SamplerConfig, config.get("sampler", {}))
    except (ValueError, KeyError, TypeError) as exc:
        raise CheckpointError(f"{cpath} is invalid: {exc}") from exc
    try:
        tokenizer = Tokenizer.load(folder / "tokenizer.json")
    except TokenizerError as exc:
        raise CheckpointError(str(exc)) from exc
    if tokenizer.vocab_size != model_cfg.vocab_size:
        raise CheckpointError(f"{folder}: tokenizer vocab {tokenizer.vocab_size} != model vocab {model_cfg.vocab_size}")
    wpath = folder / "weights.pt"
    try:
        state = torch.load(wpath, map_location=device, weights_only=True)
        model = build_model(model_cfg)
        model.load_state_dict(state)
    except (RuntimeError, ValueError, EOFError, OSError) as exc:
        raise CheckpointError(f"{wpath} does not load into the configured model: {exc}") from exc
    model.to(device).eval()
    return Checkpoint(
        model=model,
        model_cfg=model_cfg,
        diffusion_cfg=diffusion_cfg,
        sampler_cfg=sampler_cfg,
        tokenizer=tokenizer,
        name=str(config.get("name", "model")),
        checksum=checksum,
        meta=dict(config.get("meta", {})),
    )
