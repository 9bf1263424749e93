"""The model versions the app can draft with, and which one is the default for new drafts.

Glossary
  start model   the folder the app was started with (--model; assets/model by default)
  versions      the start model and every model folder under DATA/models/ (a folder holding
                manifest.json, or a training run's folder holding model/manifest.json) whose
                tokenizer is the start model's, so that stored token ids mean the same in all
  default       the version new drafts use: the admin setting default_model (a model id), set by
                promotion; the start model while none is set or the set one is not present
  refusal       why a version may not be promoted (engine.promotion: a fine-tune without a
                forgetting check, or one that worsens the test bound by more than 2 %)

A version's weights are loaded the first time something drafts with it, then kept.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from engine.checkpoint import Checkpoint
    from engine.diffusion import Diffusion

log = logging.getLogger("app")


@dataclass(frozen=True)
class Version:
    model_id: str
    version: str
    parent: str | None
    folder: Path
    meta: dict[str, Any]
    refusal: str | None  # None: it may become the default

    @property
    def test_change(self) -> float | None:
        """The fine-tune's relative change of the test bound against its parent (None: not measured)."""
        gate = self.meta.get("test_gate")
        return float(gate["change"]) if isinstance(gate, dict) and "change" in gate else None


class ModelVersions:
    """The start model, the fine-tunes beside it, and the default; safe to use from several threads."""

    def __init__(self, start: Checkpoint, start_dir: Path, models_dir: Path) -> None:
        self.start_dir, self.models_dir = Path(start_dir), Path(models_dir)
        self._lock = threading.Lock()
        self._loaded: dict[str, Checkpoint] = {start.model_id: start}
        self._diffusions: dict[str, Diffusion] = {start.model_id: start.diffusion()}
        self._folders: dict[str, Path] = {start.model_id: self.start_dir}
        self._tokenizer = start.tokenizer.to_json()
        self.start_id = self.default_id = start.model_id

    def _candidates(self) -> list[Path]:
        if not self.models_dir.is_dir():
            return []
        out = []
        for d in sorted(self.models_dir.iterdir()):
            for folder in (d, d / "model"):
                if (folder / "manifest.json").is_file():
                    out.append(folder)
                    break
        return out

    def versions(self) -> list[Version]:
        """The start model first, then the others by folder name; unreadable folders are skipped."""
        from engine import checkpoint
        from engine.promotion import refusal

        start_tok = checkpoint.describe(self.start_dir)["tokenizer_sha256"]
        out: list[Version] = []
        for folder in [self.start_dir, *self._candidates()]:
            try:
                d = checkpoint.describe(folder)
            except checkpoint.CheckpointError as exc:
                log.warning("model folder %s skipped: %s", folder, exc)
                continue
            if d["tokenizer_sha256"] != start_tok or any(v.model_id == d["model_id"] for v in out):
                continue
            why = None if folder == self.start_dir else refusal(d["version"], d["parent"], d["meta"])
            out.append(Version(d["model_id"], d["version"], d["parent"], folder, d["meta"], why))
        with self._lock:
            self._folders.update({v.model_id: v.folder for v in out})
        return out

    def find(self, model_id: str) -> Version | None:
        return next((v for v in self.versions() if v.model_id == model_id), None)

    def checkpoint(self, model_id: str) -> Checkpoint:
        """The loaded model of that id (loaded now if need be); KeyError if no folder holds it."""
        from engine import checkpoint

        with self._lock:
            if model_id in self._loaded:
                return self._loaded[model_id]
        folder = self._folders.get(model_id)
        if folder is None:
            self.versions()
            folder = self._folders.get(model_id)
        if folder is None:
            raise KeyError(f"no model folder holds {model_id}")
        ck = checkpoint.load(folder)
        if ck.model_id != model_id:  # the folder changed since it was listed
            raise KeyError(f"{folder} now holds {ck.model_id}, not {model_id}")
        if ck.tokenizer.to_json() != self._tokenizer:
            raise KeyError(f"{model_id} has another tokenizer than the start model")
        with self._lock:
            self._loaded.setdefault(model_id, ck)
            self._diffusions.setdefault(model_id, ck.diffusion())
            return self._loaded[model_id]

    def diffusion(self, model_id: str) -> Diffusion:
        self.checkpoint(model_id)
        return self._diffusions[model_id]

    def current(self) -> Checkpoint:
        return self.checkpoint(self.default_id)

    def make_default(self, model_id: str) -> Checkpoint:
        """Load the version and make it the default for new drafts."""
        ck = self.checkpoint(model_id)
        self.default_id = model_id
        return ck
