"""Reviewers' feedback as training examples: the folder `python -m storage.export training` writes,
read and turned into batches that `engine.train --feedback DIR` mixes with the base corpus.

Glossary
  feedback folder  approved.jsonl, edits.jsonl, terms.jsonl, rejected.jsonl, manifest.json (see
                   storage/training_export.py; the files are checked against the manifest)
  edit example     one reviewer correction as a window: the reviewer's text (new_text) at its place
                   is the target, the text around it (before / after) is given clean, so the loss
                   is only on the corrected span: the denoiser learns to write what the reviewer
                   wrote where the model had written something else
  approved window  a window that starts at an approved document, trained like the base corpus
  share            the fraction of each batch's rows drawn from the feedback (the rest are base
                   corpus windows, so the model does not forget what it knew)

Positives only: a rejected draft's text is never trained toward. Edits of rejected or discarded
documents, approved texts equal to a rejected draft, deletions (an empty new text: a fixed-length
draft has no place to learn them) and corrections without context are left out, and counted.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from engine.clean_mask import random_clean_mask
from engine.tokenizer import EOS, Tokenizer
from engine.train_data import windows

FORMAT = 1
FILES = ("approved.jsonl", "edits.jsonl", "terms.jsonl", "rejected.jsonl")
NOT_POSITIVE = ("rejected", "discarded")


class FeedbackError(ValueError):
    """A feedback folder is missing, incomplete, altered or of an unknown format."""


@dataclass
class Feedback:
    """What a feedback folder holds that training may use (see the module docstring)."""

    approved: list[str]
    edits: list[tuple[str, str, str]]  # (before, new_text, after)
    terms: list[dict[str, Any]]
    rejected: list[str]
    sha256: str  # of manifest.json: names this exact set of files
    skipped: dict[str, int] = field(default_factory=dict)

    def summary(self) -> dict[str, Any]:
        return {"sha256": self.sha256, "approved": len(self.approved), "edits": len(self.edits),
                "terms": len(self.terms), "rejected": len(self.rejected), "skipped": dict(self.skipped)}


def _rows(folder: Path, name: str) -> list[dict[str, Any]]:
    out = []
    for i, line in enumerate((folder / name).read_text(encoding="utf-8").splitlines(), 1):
        if line.strip():
            try:
                row = json.loads(line)
            except ValueError as exc:
                raise FeedbackError(f"{folder / name}:{i} is not JSON ({exc})") from exc
            if not isinstance(row, dict):
                raise FeedbackError(f"{folder / name}:{i} is not a JSON object")
            out.append(row)
    return out


def load_feedback(folder: str | Path) -> Feedback:
    """Read and check a feedback folder; FeedbackError names the first fault."""
    folder = Path(folder)
    mpath = folder / "manifest.json"
    if not mpath.is_file():
        raise FeedbackError(f"{folder} is not a feedback folder: no manifest.json (write one with "
                            "python -m storage.export training)")
    try:
        manifest = json.loads(mpath.read_text())
        ok = manifest.get("format") == FORMAT and manifest.get("kind") == "training"
        files = manifest["files"]
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise FeedbackError(f"{mpath} is corrupt: {exc}") from exc
    if not ok:
        raise FeedbackError(f"{mpath}: not a training export of format {FORMAT}")
    for name in FILES:
        path = folder / name
        if not path.is_file():
            raise FeedbackError(f"feedback file missing: {path}")
        if files.get(name) != hashlib.sha256(path.read_bytes()).hexdigest():
            raise FeedbackError(f"feedback file altered (SHA-256 differs from the manifest): {path}")
    rejected = [str(r.get("text", "")) for r in _rows(folder, "rejected.jsonl")]
    banned = set(rejected)
    skipped = {"approved equal to a rejected draft": 0, "edits of rejected drafts": 0, "deletions": 0,
               "edits without context": 0}
    approved = []
    for r in _rows(folder, "approved.jsonl"):
        text = str(r.get("text", ""))
        if text in banned:
            skipped["approved equal to a rejected draft"] += 1
        elif text.strip():
            approved.append(text)
    edits = []
    for r in _rows(folder, "edits.jsonl"):
        if r.get("document_status") in NOT_POSITIVE:
            skipped["edits of rejected drafts"] += 1
        elif not r.get("new_text"):
            skipped["deletions"] += 1
        elif not isinstance(r.get("before"), str) or not isinstance(r.get("after"), str):
            skipped["edits without context"] += 1
        else:
            edits.append((r["before"], str(r["new_text"]), r["after"]))
    return Feedback(approved, edits, _rows(folder, "terms.jsonl"), rejected,
                    hashlib.sha256(mpath.read_bytes()).hexdigest(), {k: v for k, v in skipped.items() if v})


def edit_example(tok: Tokenizer, before: str, new_text: str, after: str, seq_len: int) -> tuple[list[int], int, int] | None:
    """(ids, start, end) of a window of seq_len tokens holding the correction's tokens at
    [start, end) with as much of the text around it as fits, context split evenly when both sides
    have enough; positions past the document are -1 (filled later). None when the correction alone
    is seq_len tokens or more."""
    new = tok.encode(new_text)
    if not new or len(new) >= seq_len:
        return None
    left, right = tok.encode(before), tok.encode(after) + [EOS]
    room = seq_len - len(new)
    n_left = min(len(left), max(room // 2, room - len(right)))
    n_right = min(len(right), room - n_left)
    ids = left[len(left) - n_left:] + new + right[:n_right]
    return ids + [-1] * (seq_len - len(ids)), n_left, n_left + len(new)


class FeedbackMix:
    """Batches that mix the base corpus with the feedback (see the module docstring).

    `batch` draws every random choice from the data generator and the clean masks from the noise
    generator, as the plain loop does, so a fine-tune is deterministic and resumes exactly."""

    def __init__(self, feedback: Feedback, tok: Tokenizer, seq_len: int, share: float) -> None:
        if not 0.0 < share <= 1.0:
            raise FeedbackError(f"the feedback share must be in (0, 1], got {share}")
        self.share, self.seq_len = share, seq_len
        self.texts = [*feedback.approved, *(new for _, new, _ in feedback.edits)]  # words the lexicon must know
        self.edits = [e for e in (edit_example(tok, *x, seq_len) for x in feedback.edits) if e is not None]
        ids: list[int] = []
        self.starts: list[int] = []
        for text in feedback.approved:
            self.starts.append(len(ids))
            ids.extend(tok.encode(text) + [EOS])
        self.approved = torch.tensor(ids, dtype=torch.long)  # (N,)
        if not self.edits and not self.starts:
            raise FeedbackError("the feedback holds no approved text and no usable edit: nothing to fine-tune on")

    def _approved_window(self, k: int) -> Tensor:
        n, s = self.approved.numel(), self.starts[k]
        reps = (s + self.seq_len) // n + 1
        return self.approved.repeat(reps)[s: s + self.seq_len] if reps > 1 else self.approved[s: s + self.seq_len]

    def batch(self, stream: Tensor, batch: int, data_gen: torch.Generator, noise_gen: torch.Generator,
              clean_prob: float) -> tuple[Tensor, Tensor]:
        """(x0 (B, L), clean (B, L) bool): base windows with random clean spans, except the rows
        drawn for feedback (an edit example: clean but for the correction; an approved window:
        random clean spans)."""
        L = self.seq_len
        x0 = windows(stream, L, batch, data_gen)  # (B, L)
        clean = random_clean_mask(batch, L, noise_gen, p=clean_prob)  # (B, L)
        pick = torch.rand(batch, generator=data_gen) < self.share  # (B,)
        items = torch.randint(0, len(self.edits) + len(self.starts), (batch,), generator=data_gen)  # (B,)
        fill = windows(stream, L, batch, data_gen)  # (B, L) base text after a short correction's document
        for b in range(batch):
            if not pick[b]:
                continue
            k = int(items[b])
            if k < len(self.edits):
                ids, start, end = self.edits[k]
                row = torch.tensor(ids, dtype=torch.long)
                pad = row < 0
                row[pad] = fill[b][: int(pad.sum())]
                x0[b] = row
                clean[b] = True
                clean[b, start:end] = False
            else:
                x0[b] = self._approved_window(k - len(self.edits))
        return x0, clean
