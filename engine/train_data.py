"""The training loop's data: documents to texts, texts to one token stream, the stream to windows.

Glossary (as in engine.train)
  stream   all training tokens, documents joined by <eos> (1-D LongTensor)
  window   seq_len consecutive tokens of the stream: one training sequence
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path

import torch
from torch import Tensor

from engine.corpus.loaders import load_documents
from engine.corpus.splits import read_split, split_random
from engine.corpus.text import CorpusError, Document
from engine.tokenizer import EOS, Tokenizer


class TrainError(RuntimeError):
    """A training run cannot start or resume; the message says why."""


def _documents(data: Path, column: str | None) -> list[Document]:
    try:
        result = load_documents(data, column)
    except CorpusError as exc:
        raise TrainError(str(exc)) from exc
    for s in result.skipped:
        print(f"skipped {s.source}: {s.reason}", file=sys.stderr)
    return result.documents


def load_texts(data: str | Path, column: str | None = None) -> tuple[list[str], list[str]]:
    """(train, validation) texts: a prepared corpus folder (train.jsonl, validation.jsonl, as
    written by `engine.corpus`) or anything `engine.corpus.load_documents` reads, split 95 / 5."""
    data = Path(data)
    if (data / "train.jsonl").is_file():
        train = read_split(data, "train")
        val = read_split(data, "validation") if (data / "validation.jsonl").is_file() else []
    else:
        parts = split_random(_documents(data, column), (0.95, 0.05, 0.0), seed=0)
        train, val = [d.text for d in parts["train"]], [d.text for d in parts["validation"]]
    if not train:
        raise TrainError(f"no training documents in {data}")
    return train, val


def load_split_texts(data: str | Path, split: str, column: str | None = None) -> list[str]:
    """One split of a prepared corpus folder, or every document at `data` otherwise."""
    data = Path(data)
    if (data / f"{split}.jsonl").is_file():
        texts = read_split(data, split)
        empty = f"the {split} split of {data} is empty (0 documents)"
    elif (data / "train.jsonl").is_file():
        raise TrainError(f"{data} has no {split}.jsonl")
    else:
        texts = [d.text for d in _documents(data, column)]
        empty = f"no documents in {data}"
    if not texts:
        raise TrainError(empty)
    return texts


def token_stream(texts: Sequence[str], tok: Tokenizer) -> Tensor:
    ids: list[int] = []
    for text in texts:
        ids.extend(tok.encode(text))
        ids.append(EOS)
    return torch.tensor(ids, dtype=torch.long)  # (N,)


def windows(stream: Tensor, seq_len: int, batch: int, gen: torch.Generator) -> Tensor:
    """(batch, seq_len) random windows of the stream (wrapping when the stream is short)."""
    n = stream.numel()
    if n > seq_len:
        starts = torch.randint(0, n - seq_len + 1, (batch,), generator=gen)  # (B,)
        return torch.stack([stream[s : s + seq_len] for s in starts.tolist()])
    reps = seq_len // n + 1
    return stream.repeat(reps)[:seq_len].expand(batch, seq_len).clone()


def eval_windows(stream: Tensor, seq_len: int, max_windows: int) -> Tensor:
    """Consecutive, non-overlapping windows from the start of the stream: a fixed eval set."""
    k = min(max_windows, max(1, stream.numel() // seq_len))
    if stream.numel() < seq_len:
        return windows(stream, seq_len, 1, torch.Generator())
    return stream[: k * seq_len].view(k, seq_len)  # (k, seq_len)
