"""Registry English: Debian's long package descriptions (apt's Translation-en), for pre-training.

Glossary (engine.corpus)
  Translation-en  apt's index of English package descriptions, one stanza per package
  InRelease       the suite's signed release file; it lists the SHA-256 of every index
  style           `sdr` lower-cases and spaces punctuation the way the SDR reports are written;
                  `plain` keeps the text as Debian wrote it
Only `download` needs the network. The index is trusted only through the signed InRelease: its
signature is checked with `gpgv` against Debian's archive keyring, and the index's SHA-256 must
be the one the signed text lists.
"""

from __future__ import annotations

import hashlib
import lzma
import re
import subprocess
import urllib.error
import urllib.request
from collections.abc import Iterable, Sequence
from pathlib import Path

from engine.corpus.splits import split_random, write_splits
from engine.corpus.text import CorpusError, Document, normalise

MIRROR = "http://deb.debian.org/debian"
SUITE = "bookworm"
INDEX = "main/i18n/Translation-en.xz"
KEYRING = Path("/usr/share/keyrings/debian-archive-keyring.gpg")
FRACTIONS = (0.96, 0.02, 0.02)
MIN_PARAGRAPH_WORDS = 4
MIN_DOCUMENT_WORDS = 8
STYLES = ("sdr", "plain")


def download(url: str, dest: Path, timeout: float = 60) -> Path:
    """Write `url` to `dest` (through a temporary file beside it); CorpusError when it fails."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(f".{dest.name}.part")
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp, tmp.open("wb") as fh:
            while chunk := resp.read(1 << 20):
                fh.write(chunk)
    except (urllib.error.URLError, OSError) as exc:
        tmp.unlink(missing_ok=True)
        raise CorpusError(f"could not download {url}: {exc}; or pass --inrelease and --index files fetched elsewhere") from None
    tmp.replace(dest)
    return dest


def signed_text(inrelease: Path, keyring: Path = KEYRING) -> str:
    """The text of a clear-signed InRelease whose signature `gpgv` accepts; CorpusError otherwise."""
    if not inrelease.is_file():
        raise CorpusError(f"{inrelease}: no such file")
    if not keyring.is_file():
        raise CorpusError(f"{keyring} not found: install Debian's debian-archive-keyring package to check the signature")
    try:
        proc = subprocess.run(
            ["gpgv", "--keyring", str(keyring.resolve()), "--output", "-", str(inrelease)],
            capture_output=True, timeout=60,
        )  # fmt: skip
    except FileNotFoundError:
        raise CorpusError("gpgv not found: install Debian's gpgv package to check the signature") from None
    if proc.returncode != 0:
        why = proc.stderr.decode("utf-8", "replace").strip().splitlines()
        raise CorpusError(f"{inrelease}: signature not accepted by gpgv ({why[-1] if why else proc.returncode})")
    return proc.stdout.decode("utf-8")


def listed_sha256(release: str, name: str) -> tuple[str, int]:
    """(SHA-256, size) that the release text's SHA256 section lists for `name`."""
    section = False
    for line in release.splitlines():
        if not line.startswith(" "):
            section = line.rstrip() == "SHA256:"
            continue
        parts = line.split()
        if section and len(parts) == 3 and parts[2] == name:
            return parts[0], int(parts[1])
    raise CorpusError(f"the release file lists no SHA-256 for {name}")


def release_date(release: str) -> str:
    """The `Date:` field of a release text ('' when absent)."""
    for line in release.splitlines():
        if line.startswith("Date:"):
            return line.partition(":")[2].strip()
    return ""


def parse_translation(text: str) -> list[tuple[str, list[str]]]:
    """(package, paragraphs of its long description) per stanza, in file order.

    A stanza's `Description-en:` line is the short description; the indented lines after it
    are the long one, with ' .' lines between paragraphs. The short description is dropped:
    it is a title, not prose.
    """
    entries: list[tuple[str, list[str]]] = []
    for stanza in re.split(r"\n\s*\n", text):
        package, paragraphs, current, in_long = "", [], [], False
        for line in stanza.splitlines():
            if line.startswith("Package:"):
                package = line.partition(":")[2].strip()
            elif line.startswith("Description-en:"):
                in_long = True
            elif in_long and line.startswith(" "):
                if line.strip() == ".":
                    paragraphs.append(" ".join(current))
                    current = []
                else:
                    current.append(line.strip())
            else:
                in_long = False
        if current:
            paragraphs.append(" ".join(current))
        if package:
            entries.append((package, [p for p in paragraphs if p]))
    return entries


_SPACED = re.compile(r"""([()\[\];:!?"]|,(?=\s|$)|\.(?=\s|$))""")


def sdr_style(text: str) -> str:
    """Lower case, and punctuation set apart by spaces, as in the lower-cased SDR reports:
    'Fixes a bug (crash), see below.' -> 'fixes a bug ( crash ) , see below .'. A full stop or
    comma inside a token ('v1.2', '3,000') stays."""
    return normalise(_SPACED.sub(r" \1 ", text.lower()))


def to_documents(entries: Iterable[tuple[str, Sequence[str]]], style: str = "sdr") -> tuple[list[Document], dict]:
    """One document per package: its paragraphs not seen in an earlier package, joined.

    Related packages repeat whole paragraphs (a library, its -dev and -doc packages), so a
    paragraph is kept only the first time it appears; paragraphs under MIN_PARAGRAPH_WORDS
    words and documents under MIN_DOCUMENT_WORDS are dropped. Returns the documents and counts.
    """
    if style not in STYLES:
        raise CorpusError(f"unknown style {style!r}; expected one of {', '.join(STYLES)}")
    seen: set[str] = set()
    docs: list[Document] = []
    counts = {"packages": 0, "paragraphs": 0, "paragraphs_repeated": 0, "paragraphs_short": 0, "packages_short": 0}
    for package, paragraphs in entries:
        counts["packages"] += 1
        kept = []
        for p in paragraphs:
            counts["paragraphs"] += 1
            text = normalise(p)
            if len(text.split()) < MIN_PARAGRAPH_WORDS:
                counts["paragraphs_short"] += 1
            elif text in seen:
                counts["paragraphs_repeated"] += 1
            else:
                seen.add(text)
                kept.append(text)
        body = " ".join(kept)
        if len(body.split()) < MIN_DOCUMENT_WORDS:
            counts["packages_short"] += 1
            continue
        docs.append(Document(sdr_style(body) if style == "sdr" else body, f"Translation-en:{package}"))
    return docs, counts


def fetch_english(
    cache_dir: str | Path,
    out_dir: str | Path,
    *,
    style: str = "sdr",
    inrelease: str | Path | None = None,
    index: str | Path | None = None,
    keyring: Path = KEYRING,
    seed: int = 0,
) -> dict:
    """Build the registry-English corpus in `out_dir`; return its `splits.json` summary.

    Downloads `dists/SUITE/InRelease` and the xz Translation-en it lists into `cache_dir`
    (or uses the `inrelease` / `index` files given), checks the signature and the index's
    SHA-256, parses, de-duplicates paragraphs, applies `style`, and splits at random by
    package with FRACTIONS and `seed`.
    """
    cache = Path(cache_dir)
    release_path = Path(inrelease) if inrelease else download(f"{MIRROR}/dists/{SUITE}/InRelease", cache / f"{SUITE}-InRelease")
    release = signed_text(release_path, keyring)
    want, size = listed_sha256(release, INDEX)
    index_path = Path(index) if index else cache / f"{SUITE}-Translation-en.xz"
    raw = index_path.read_bytes() if index_path.is_file() else None
    got = hashlib.sha256(raw).hexdigest() if raw is not None else ""
    if index is None and got != want:  # absent or stale in the cache
        download(f"{MIRROR}/dists/{SUITE}/{INDEX}", index_path)
        raw = index_path.read_bytes()
        got = hashlib.sha256(raw).hexdigest()
    if raw is None:
        raise CorpusError(f"{index_path}: no such file")
    if got != want:
        raise CorpusError(f"{index_path}: SHA-256 {got} is not the {want} that the signed release lists")
    try:
        text = lzma.decompress(raw).decode("utf-8")
    except (lzma.LZMAError, UnicodeDecodeError) as exc:
        raise CorpusError(f"{index_path}: not an xz file of UTF-8 text ({exc})") from None
    docs, counts = to_documents(parse_translation(text), style)
    if not docs:
        raise CorpusError(f"{index_path}: no description long enough to keep")
    splits = split_random(docs, FRACTIONS, seed)
    extra = {
        "corpus": f"Debian {SUITE} long package descriptions ({INDEX}), style {style}",
        "index_sha256": got,
        "index_bytes": size,
        "release_date": release_date(release),
        "split_by": f"package, at random (seed {seed})",
        "fractions": list(FRACTIONS),
        "read": counts["packages"],
        "skipped": [],
        "duplicates_dropped": counts["paragraphs_repeated"],
        "counts": counts,
        "style": style,
        "text_sha256": hashlib.sha256("\n".join(d.text for d in docs).encode()).hexdigest(),
    }
    return write_splits(out_dir, splits, None, extra)
