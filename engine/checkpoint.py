"""Save and load a model folder: weights, config JSON, tokenizer and a SHA-256 manifest.

A model folder holds
  weights.pt     the state dict (loaded with weights_only=True: no pickled code runs)
  config.json    {"format": 1, "name", "model": ModelConfig, "diffusion": DiffusionConfig,
                  "sampler": SamplerConfig, "meta": {...}}
  tokenizer.json the byte-level BPE (engine.tokenizer)
  lexicon.txt    optional: the training split's words, one a line, for the sampler's word rule
                 (engine.words); when present it is listed in the manifest like the others
  manifest.json  {"files": {name: sha256}, "version": label, "parent": model_id}; every file is
                 checked on load. "version" (a person's label, e.g. "feedback-2") and "parent" (the
                 model_id a fine-tune started from) are optional: a folder without them is its own
                 version (its model_id) with no parent

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
from engine.words import LEXICON_FILE, WordRule, load_lexicon, save_lexicon

FORMAT = 1
FILES = ("weights.pt", "config.json", "tokenizer.json")
OPTIONAL_FILES = (LEXICON_FILE,)


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
    words: WordRule | None = None  # the sampler's word rule, when the folder has a lexicon
    lineage: dict[str, str] = field(default_factory=dict)  # the manifest's "version" and "parent"

    @property
    def model_id(self) -> str:
        return f"{self.name}@{self.checksum[:12]}"

    @property
    def version(self) -> str:
        """The manifest's version label, else the model_id."""
        return self.lineage.get("version") or self.model_id

    @property
    def parent(self) -> str | None:
        """The model_id this model was fine-tuned from (None for a model trained from scratch)."""
        return self.lineage.get("parent")

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
    lexicon: list[str] | None = None,
    lineage: dict[str, str] | None = None,
) -> str:
    """Write a model folder; returns the checksum (SHA-256 of the manifest). `lexicon` (the
    training words) enables the sampler's word rule for this model; `lineage` ("version",
    "parent") goes into the manifest."""
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
    names = list(FILES)
    if lexicon is not None:
        save_lexicon(lexicon, folder / LEXICON_FILE)
        names.append(LEXICON_FILE)
    elif (folder / LEXICON_FILE).exists():
        (folder / LEXICON_FILE).unlink()  # a stale lexicon must not sit unlisted beside new weights
    return _write_manifest(folder, {f: _sha256(folder / f) for f in names}, _check_lineage(lineage or {}))


LINEAGE_KEYS = ("version", "parent")


def _check_lineage(lineage: dict[str, Any]) -> dict[str, str]:
    unknown = sorted(set(lineage) - set(LINEAGE_KEYS))
    if unknown:
        raise CheckpointError(f"unknown lineage key(s) {', '.join(unknown)}: expected version, parent")
    for k, v in lineage.items():
        if v is not None and (not isinstance(v, str) or not v.strip() or len(v) > 200):
            raise CheckpointError(f"lineage {k} must be a non-empty text of at most 200 characters, got {v!r}")
    return {k: v for k, v in lineage.items() if v is not None}


def read_lineage(folder: str | Path) -> dict[str, str]:
    """The manifest's "version" and "parent" (absent keys left out); {} for an unreadable manifest."""
    try:
        raw = json.loads((Path(folder) / "manifest.json").read_text())
    except (OSError, ValueError):
        return {}
    return {k: raw[k] for k in LINEAGE_KEYS if isinstance(raw, dict) and isinstance(raw.get(k), str)}


def _write_manifest(folder: Path, files: dict[str, str], lineage: dict[str, str] | None = None) -> str:
    """Write manifest.json listing `files` (name -> SHA-256) and the lineage; returns the
    manifest's own SHA-256."""
    body: dict[str, Any] = {"files": files, **(lineage or {})}
    (folder / "manifest.json").write_text(json.dumps(body, indent=2, sort_keys=True) + "\n")
    return _sha256(folder / "manifest.json")


def amend(folder: str | Path, *, sampler_cfg: SamplerConfig | None = None, lexicon: list[str] | None = None,
          meta: dict[str, Any] | None = None, lineage: dict[str, str] | None = None) -> str:
    """Change an existing, verified model folder's sampler defaults and / or give it a lexicon,
    add `meta` keys to its config's meta, set its lineage (version, parent; the others are kept),
    and list them in its manifest; returns the new checksum (a new model_id: drafts made with
    other defaults are another model's). The weights and the tokenizer are untouched."""
    folder = Path(folder)
    _, files = _verify(folder)
    kept = read_lineage(folder) | _check_lineage(lineage or {})
    if meta:
        config = json.loads((folder / "config.json").read_text())
        config["meta"] = {**config.get("meta", {}), **meta}
        (folder / "config.json").write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
        files["config.json"] = _sha256(folder / "config.json")
    if sampler_cfg is not None:
        config = json.loads((folder / "config.json").read_text())
        config["sampler"] = to_dict(sampler_cfg)
        (folder / "config.json").write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
        files["config.json"] = _sha256(folder / "config.json")
    if lexicon is not None:
        save_lexicon(lexicon, folder / LEXICON_FILE)
        files[LEXICON_FILE] = _sha256(folder / LEXICON_FILE)
    return _write_manifest(folder, files, kept)


def verify(folder: str | Path) -> str:
    """Check that every file is present and matches the manifest; return the checksum."""
    return _verify(Path(folder))[0]


def _verify(folder: Path) -> tuple[str, dict[str, str]]:
    """verify(), also returning the files the manifest lists (name -> SHA-256)."""
    if not folder.is_dir():
        raise CheckpointError(f"model folder not found: {folder}")
    mpath = folder / "manifest.json"
    if not mpath.is_file():
        raise CheckpointError(f"model folder {folder} has no manifest.json")
    try:
        files = json.loads(mpath.read_text())["files"]
    except (ValueError, KeyError, TypeError) as exc:
        raise CheckpointError(f"{mpath} is corrupt: {exc}") from exc
    if not isinstance(files, dict):
        raise CheckpointError(f"{mpath} is corrupt: 'files' is not an object")
    unknown = sorted(set(files) - set(FILES) - set(OPTIONAL_FILES))
    if unknown:
        raise CheckpointError(f"{mpath} lists unknown file(s) {', '.join(unknown)}")
    for name in FILES + tuple(n for n in OPTIONAL_FILES if n in files):
        path = folder / name
        if not path.is_file():
            raise CheckpointError(f"model file missing: {path}")
        if files.get(name) != _sha256(path):
            raise CheckpointError(f"model file corrupt (SHA-256 differs from manifest): {path}")
    return _sha256(mpath), files


def describe(folder: str | Path) -> dict[str, Any]:
    """What a verified model folder is, without building its network: model_id, version, parent,
    meta and the SHA-256 of its tokenizer (models with equal ones share token ids)."""
    folder = Path(folder)
    checksum, files = _verify(folder)
    try:
        config = json.loads((folder / "config.json").read_text())
        name, meta = str(config.get("name", "model")), dict(config.get("meta", {}))
    except (ValueError, TypeError, AttributeError) as exc:
        raise CheckpointError(f"{folder / 'config.json'} is invalid: {exc}") from exc
    lineage = read_lineage(folder)
    model_id = f"{name}@{checksum[:12]}"
    return {"model_id": model_id, "version": lineage.get("version") or model_id, "parent": lineage.get("parent"),
            "meta": meta, "tokenizer_sha256": files["tokenizer.json"], "folder": str(folder)}


def load(folder: str | Path, device: str | torch.device = "cpu") -> Checkpoint:
    """Load and verify a model folder. Every failure is a CheckpointError naming the file."""
    from engine.build import build_model  # the network is only needed once a folder is read

    folder = Path(folder)
    checksum, files = _verify(folder)
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
    words = None
    if LEXICON_FILE in files:
        try:
            words = WordRule(tokenizer, load_lexicon(folder / LEXICON_FILE))
        except (ValueError, UnicodeDecodeError) as exc:
            raise CheckpointError(f"{folder / LEXICON_FILE} is invalid: {exc}") from exc
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
        words=words,
        lineage=read_lineage(folder),
    )


def main(argv: list[str] | None = None) -> int:
    """`python -m engine.checkpoint amend --model DIR [--sampler SPEC] [--lexicon-from CORPUS]`."""
    from engine.cli import Parser, one_line
    from engine.config import parse_sampler_spec
    from engine.words import build_lexicon

    p = Parser(prog="python -m engine.checkpoint", description="Amend a model folder's sampler defaults or lexicon.")
    p.add_argument("action", choices=["amend"], help="amend: rewrite the chosen parts and the manifest")
    p.add_argument("--model", type=Path, required=True, help="model folder")
    p.add_argument("--sampler", default=None, help="sampler fields to change, e.g. 'steps=64,commit=1' (engine.config.parse_sampler_spec)")
    p.add_argument("--lexicon-from", type=Path, default=None, help="prepared corpus folder whose train.jsonl gives the lexicon")
    args = p.parse_args(argv)
    try:
        ck_cfg = load(args.model).sampler_cfg
        sampler_cfg = parse_sampler_spec(args.sampler, ck_cfg) if args.sampler else None
        lexicon = None
        if args.lexicon_from is not None:
            with (args.lexicon_from / "train.jsonl").open(encoding="utf-8") as f:
                lexicon = build_lexicon(json.loads(line)["text"] for line in f if line.strip())
    except (CheckpointError, ValueError, OSError, KeyError) as exc:
        p.exit(2, f"{p.prog}: error: {one_line(str(exc))}\n")
    print(amend(args.model, sampler_cfg=sampler_cfg, lexicon=lexicon))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
