"""A user's documents: a folder of .txt/.md files, one .txt/.md file, a .jsonl or a .csv.

Glossary (engine.corpus)
  source    `name:LINE` for a CSV record or JSONL line (the line where it starts), or a path
            relative to the folder for a folder of files
Bad files, lines and rows are reported as `Skipped` entries with their reason, never raised.
"""

from __future__ import annotations

import codecs
import csv
import io
import json
import sys
from pathlib import Path

from engine.corpus.text import BINARY_PROBE, CorpusError, Document, LoadResult, Skipped, decode_strict, normalise

TEXT_SUFFIXES = (".txt", ".md")


def parse_csv(text: str, name: str, column: str) -> LoadResult:
    """Documents from one CSV (header row first) taken from `column`; rows whose cell is empty
    or missing are skipped. Sources are `name:LINE`, LINE the line where the record starts.

    Raises CorpusError when the header lacks `column`. A malformed record ends the file with
    one Skipped entry (the records before it are kept).
    """
    result = LoadResult()
    old_limit = csv.field_size_limit()
    csv.field_size_limit(min(sys.maxsize, 2**31 - 1))  # one report may exceed the 128 KiB default
    try:
        reader = csv.reader(io.StringIO(text, newline=""))
        try:
            header = next(reader)
        except StopIteration:
            result.skipped.append(Skipped(name, "empty file"))
            return result
        except csv.Error as exc:
            result.skipped.append(Skipped(f"{name}:1", f"malformed CSV header ({exc})"))
            return result
        names = [h.strip().lstrip("\ufeff") for h in header]
        if column not in names:
            shown = ", ".join(repr(n) for n in names if n) or "none"
            raise CorpusError(f"{name} has no column {column!r}; its columns are {shown}")
        index = names.index(column)
        while True:
            start = reader.line_num + 1
            try:
                row = next(reader)
            except StopIteration:
                break
            except csv.Error as exc:
                result.skipped.append(Skipped(f"{name}:{start}", f"malformed CSV ({exc}); rest of the file skipped"))
                break
            if not row:  # a blank line, not a record
                continue
            body = normalise(row[index]) if index < len(row) else ""
            if body:
                result.documents.append(Document(body, f"{name}:{start}"))
            else:
                result.skipped.append(Skipped(f"{name}:{start}", f"empty cell in column {column!r}"))
    finally:
        csv.field_size_limit(old_limit)
    return result


def parse_jsonl(raw: bytes, name: str) -> LoadResult:
    """Documents from the string field `text` of each JSON-object line; blank lines are ignored,
    every other line that yields no document is skipped with its line number."""
    result = LoadResult()
    if b"\x00" in raw[:BINARY_PROBE]:
        result.skipped.append(Skipped(name, "binary file (contains NUL bytes)"))
        return result
    for number, line in enumerate(raw.split(b"\n"), start=1):
        source = f"{name}:{number}"
        if number == 1 and line.startswith(codecs.BOM_UTF8):
            line = line[len(codecs.BOM_UTF8) :]
        if not line.strip():
            continue
        try:
            decoded = line.decode("utf-8")
        except UnicodeDecodeError as exc:
            result.skipped.append(Skipped(source, f"not UTF-8 (byte 0x{line[exc.start:exc.start + 1].hex().upper()})"))
            continue
        try:
            obj = json.loads(decoded)
        except json.JSONDecodeError as exc:
            result.skipped.append(Skipped(source, f"not valid JSON ({exc.msg})"))
            continue
        if not isinstance(obj, dict):
            result.skipped.append(Skipped(source, f"not a JSON object (a {type(obj).__name__})"))
            continue
        body = obj.get("text")
        if not isinstance(body, str):
            result.skipped.append(Skipped(source, "no string field 'text'"))
            continue
        body = normalise(body)
        if body:
            result.documents.append(Document(body, source))
        else:
            result.skipped.append(Skipped(source, "empty text"))
    return result


def load_text_file(path: Path, source: str) -> LoadResult:
    """One .txt / .md file as one document, unless it is empty, binary or not UTF-8."""
    result = LoadResult()
    try:
        raw = path.read_bytes()
    except OSError as exc:
        result.skipped.append(Skipped(source, f"unreadable ({exc.strerror or exc})"))
        return result
    decoded = decode_strict(raw, source)
    if isinstance(decoded, Skipped):
        result.skipped.append(decoded)
        return result
    body = normalise(decoded)
    if body:
        result.documents.append(Document(body, source))
    else:
        result.skipped.append(Skipped(source, "empty file"))
    return result


def load_folder(root: Path) -> LoadResult:
    """Every .txt / .md file under `root` (recursive, sorted by path), one document each.

    Hidden files and folders (name starts with '.') are ignored; other files are reported as
    skipped so that a folder of, say, .rst files does not silently yield nothing.
    """
    result = LoadResult()
    for path in sorted(root.rglob("*"), key=lambda p: p.relative_to(root).as_posix()):
        rel = path.relative_to(root)
        if any(part.startswith(".") for part in rel.parts) or not path.is_file():
            continue
        if path.suffix.lower() not in TEXT_SUFFIXES:
            result.skipped.append(Skipped(rel.as_posix(), "not a .txt or .md file"))
            continue
        result.extend(load_text_file(path, rel.as_posix()))
    return result


def load_documents(path: str | Path, column: str | None = None) -> LoadResult:
    """Read a user's documents, normalised, in a fixed order. Not de-duplicated (see dedupe).

    `path` is a folder of .txt/.md files (one document each, recursive), a single .txt/.md file,
    a .jsonl with a string `text` field per line, or a .csv whose `column` (default `text`)
    holds the documents. Bad files, lines and rows are returned in `skipped`, never raised.
    Raises CorpusError for a missing path, an unknown kind of file, `column` given for
    something that is not a CSV, or a CSV without that column.
    """
    path = Path(path)
    if not path.exists():
        raise CorpusError(f"{path} does not exist")
    suffix = path.suffix.lower()
    if column is not None and (path.is_dir() or suffix != ".csv"):
        raise CorpusError(f"--column applies to .csv input only, not to {path}")
    if path.is_dir():
        return load_folder(path)
    if suffix in TEXT_SUFFIXES:
        return load_text_file(path, path.name)
    if suffix not in (".jsonl", ".csv"):
        raise CorpusError(f"{path}: expected a folder, a .txt/.md file, a .jsonl or a .csv")
    try:
        raw = path.read_bytes()
    except OSError as exc:
        return LoadResult(skipped=[Skipped(path.name, f"unreadable ({exc.strerror or exc})")])
    if suffix == ".jsonl":
        return parse_jsonl(raw, path.name)
    decoded = decode_strict(raw, path.name)
    if isinstance(decoded, Skipped):
        return LoadResult(skipped=[decoded])
    return parse_csv(decoded, path.name, column or "text")
