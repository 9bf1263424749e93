"""Documents and their text: what a loader returns, normalisation, de-duplication, decoding.

Glossary (engine.corpus)
  document  `Document(text, source)`, text normalised
  skipped   an input that yielded no document, with the reason: `Skipped(source, reason)`

Normalisation is Unicode NFC, then every run of whitespace (newlines included) becomes one
space, and the ends are stripped. Bytes are read as strict UTF-8 for a user's files and, for
the SDR CSVs (a few were saved on Windows), as UTF-8 with Windows-1252 where a byte is not UTF-8.
"""

from __future__ import annotations

import codecs
import unicodedata
from collections.abc import Iterable
from dataclasses import dataclass, field

BINARY_PROBE = 8192  # bytes looked at for NUL when deciding a file is binary


class CorpusError(RuntimeError):
    """Input that cannot be read at all (missing file, missing column), a failed download, or a
    wheel whose hash differs from the recorded one."""


@dataclass(frozen=True)
class Document:
    """One normalised text and where it came from."""

    text: str
    source: str


@dataclass(frozen=True)
class Skipped:
    """An input (file, JSONL line, CSV row) that yielded no document, and why."""

    source: str
    reason: str


@dataclass
class LoadResult:
    """What a loader read: the documents in reading order and everything it skipped."""

    documents: list[Document] = field(default_factory=list)
    skipped: list[Skipped] = field(default_factory=list)

    def extend(self, other: LoadResult) -> None:
        self.documents.extend(other.documents)
        self.skipped.extend(other.skipped)


def normalise(text: str) -> str:
    """Unicode NFC, every whitespace run (newlines, tabs, NBSP ...) -> one space, ends stripped.

    Idempotent: normalise(normalise(x)) == normalise(x).
    """
    return " ".join(unicodedata.normalize("NFC", text).split())


def dedupe(docs: Iterable[Document]) -> list[Document]:
    """Drop documents whose normalised text was seen before; keep the first, in order."""
    seen: set[str] = set()
    kept: list[Document] = []
    for doc in docs:
        key = normalise(doc.text)
        if key not in seen:
            seen.add(key)
            kept.append(doc)
    return kept


def word_count(text: str) -> int:
    """Whitespace-separated words, the unit of the sizes table."""
    return len(text.split())


def _utf8_or_cp1252(error: UnicodeError) -> tuple[str, int]:
    """Decode error handler: a byte that is not UTF-8 is read as Windows-1252 (latin-1 for the
    five bytes cp1252 leaves undefined). Only the SDR CSVs use it: a few are Windows-encoded."""
    assert isinstance(error, UnicodeDecodeError)
    byte = error.object[error.start : error.start + 1]
    try:
        return byte.decode("cp1252"), error.start + 1
    except UnicodeDecodeError:
        return byte.decode("latin-1"), error.start + 1


codecs.register_error("diffdraft_cp1252", _utf8_or_cp1252)


def decode_strict(raw: bytes, source: str) -> str | Skipped:
    """UTF-8 text (a leading BOM is dropped), or the reason it is not text."""
    if b"\x00" in raw[:BINARY_PROBE]:
        return Skipped(source, "binary file (contains NUL bytes)")
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = raw.count(b"\n", 0, exc.start) + 1
        bad = raw[exc.start : exc.start + 1].hex().upper()
        return Skipped(source, f"not UTF-8 (byte 0x{bad} on line {line}); re-save it as UTF-8")


def decode_lenient(raw: bytes) -> str:
    """UTF-8 where the bytes are UTF-8, Windows-1252 byte by byte where they are not."""
    text = raw.decode("utf-8", errors="diffdraft_cp1252")
    return text[1:] if text.startswith("\ufeff") else text
