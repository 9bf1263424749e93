"""Model folders: save/load round trip, manifest checks, clear errors naming the file."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

from engine import checkpoint
from engine.checkpoint import CheckpointError
from engine.tiny import build_tiny

SHIPPED = Path(__file__).resolve().parent.parent / "assets" / "tiny"


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("ckpt") / "tiny"
    build_tiny(out, seed=0)
    return out


def _copy(folder: Path, tmp_path: Path) -> Path:
    dst = tmp_path / "copy"
    shutil.copytree(folder, dst)
    return dst


def test_round_trip_same_outputs(folder: Path) -> None:
    a = checkpoint.load(folder)
    b = checkpoint.load(folder)
    x = torch.randint(0, a.model_cfg.vocab_size, (2, 9))
    t = torch.tensor([0.3, 0.9])
    clean = torch.zeros(2, 9, dtype=torch.bool)
    with torch.inference_mode():
        assert torch.equal(a.model(x, t, clean), b.model(x, t, clean))
    assert a.model_id == b.model_id and a.model_id.startswith("tiny-random@")
    assert not a.model.training


def test_same_seed_same_bytes(tmp_path: Path, folder: Path) -> None:
    assert build_tiny(tmp_path / "again", seed=0) == checkpoint.verify(folder)
    assert build_tiny(tmp_path / "other", seed=1) != checkpoint.verify(folder)


def test_shipped_tiny_model_verifies_and_loads() -> None:
    ck = checkpoint.load(SHIPPED)
    assert ck.meta.get("trained") is False
    assert ck.tokenizer.vocab_size == ck.model_cfg.vocab_size


@pytest.mark.parametrize("name", ["weights.pt", "config.json", "tokenizer.json", "manifest.json"])
def test_missing_file_is_named(folder: Path, tmp_path: Path, name: str) -> None:
    dst = _copy(folder, tmp_path)
    (dst / name).unlink()
    with pytest.raises(CheckpointError, match=name):
        checkpoint.load(dst)


@pytest.mark.parametrize("name", ["weights.pt", "config.json", "tokenizer.json"])
def test_corrupt_file_is_named(folder: Path, tmp_path: Path, name: str) -> None:
    dst = _copy(folder, tmp_path)
    data = bytearray((dst / name).read_bytes())
    data[len(data) // 2] ^= 0xFF
    (dst / name).write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match=f"corrupt.*{name}"):
        checkpoint.load(dst)


def test_unknown_folder(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match="not found"):
        checkpoint.load(tmp_path / "nope")


def test_config_that_does_not_match_weights(folder: Path, tmp_path: Path) -> None:
    # consistent manifest, wrong content: caught when the weights do not fit the config
    dst = _copy(folder, tmp_path)
    cfg = json.loads((dst / "config.json").read_text())
    cfg["model"]["n_layers"] += 1
    (dst / "config.json").write_text(json.dumps(cfg))
    man = json.loads((dst / "manifest.json").read_text())
    man["files"]["config.json"] = checkpoint._sha256(dst / "config.json")
    (dst / "manifest.json").write_text(json.dumps(man))
    with pytest.raises(CheckpointError, match="weights.pt"):
        checkpoint.load(dst)


def test_unknown_config_field_is_named(folder: Path, tmp_path: Path) -> None:
    dst = _copy(folder, tmp_path)
    cfg = json.loads((dst / "config.json").read_text())
    cfg["model"]["wings"] = 2
    (dst / "config.json").write_text(json.dumps(cfg))
    man = json.loads((dst / "manifest.json").read_text())
    man["files"]["config.json"] = checkpoint._sha256(dst / "config.json")
    (dst / "manifest.json").write_text(json.dumps(man))
    with pytest.raises(CheckpointError, match="wings"):
        checkpoint.load(dst)


def test_lineage_lives_in_the_manifest_and_survives_amend(folder: Path, tmp_path: Path) -> None:
    f = _copy(folder, tmp_path)
    plain = checkpoint.load(f)
    assert (plain.version, plain.parent) == (plain.model_id, None)  # no lineage: its own version
    checkpoint.amend(f, lineage={"version": "feedback-1", "parent": "sfdlm@0123456789ab"})
    checkpoint.amend(f, meta={"note": "kept"})
    ck = checkpoint.load(f)
    assert (ck.version, ck.parent, ck.meta["note"]) == ("feedback-1", "sfdlm@0123456789ab", "kept")
    assert ck.model_id != plain.model_id  # the lineage is part of the bytes the model_id names
    with pytest.raises(CheckpointError, match="unknown lineage"):
        checkpoint.amend(f, lineage={"owner": "x"})
