"""Registry English (engine.corpus.debian): parsing Translation-en, paragraph de-duplication,
the SDR style, and the signed-release checks, on a made-up index signed with a throwaway key
(no network)."""

from __future__ import annotations

import hashlib
import json
import lzma
import shutil
from pathlib import Path

import pytest

from engine.corpus import debian
from engine.corpus.__main__ import main
from engine.corpus.debian import fetch_english, listed_sha256, parse_translation, sdr_style, to_documents
from engine.corpus.text import CorpusError

INDEX_TEXT = """Package: libfoo1
Description-md5: 0
Description-en: Foo library for parsing flight logs
 Foo reads flight logs (binary and text) and writes tables.
 It is fast, small and well tested.
 .
 This package contains the shared library of foo, version 1.2.

Package: libfoo-dev
Description-md5: 1
Description-en: Foo library (development files)
 Foo reads flight logs (binary and text) and writes tables.
 It is fast, small and well tested.
 .
 This package contains the headers and the static library of foo.
 .
 See also:

Package: tiny
Description-md5: 2
Description-en: A tiny tool
 Does one thing.
"""


def test_parse_translation_splits_paragraphs_and_drops_titles() -> None:
    entries = parse_translation(INDEX_TEXT)
    assert [p for p, _ in entries] == ["libfoo1", "libfoo-dev", "tiny"]
    assert entries[0][1] == [
        "Foo reads flight logs (binary and text) and writes tables. It is fast, small and well tested.",
        "This package contains the shared library of foo, version 1.2.",
    ]
    assert len(entries[1][1]) == 3 and entries[1][1][2] == "See also:"
    assert all("Foo library" not in p for _, ps in entries for p in ps)  # the short description is a title


def test_repeated_and_short_paragraphs_are_dropped() -> None:
    docs, counts = to_documents(parse_translation(INDEX_TEXT), style="plain")
    assert [d.source for d in docs] == ["Translation-en:libfoo1", "Translation-en:libfoo-dev"]
    assert docs[1].text == "This package contains the headers and the static library of foo."
    assert counts == {"packages": 3, "paragraphs": 6, "paragraphs_repeated": 1, "paragraphs_short": 2, "packages_short": 1}


def test_sdr_style_lowercases_and_spaces_punctuation() -> None:
    assert sdr_style("Fixes a bug (crash), see below: v1.2 and 3,000 items; done.") == (
        "fixes a bug ( crash ) , see below : v1.2 and 3,000 items ; done ."
    )
    with pytest.raises(CorpusError, match="unknown style"):
        to_documents([], style="fancy")


def test_listed_sha256_reads_only_the_sha256_section() -> None:
    release = "Date: x\nMD5Sum:\n aa 10 main/i18n/Translation-en.xz\nSHA256:\n bb 11 main/i18n/Translation-en.xz\n cc 12 other\n"
    assert listed_sha256(release, "main/i18n/Translation-en.xz") == ("bb", 11)
    with pytest.raises(CorpusError, match="lists no SHA-256"):
        listed_sha256(release, "main/i18n/Translation-de.xz")


GOLDEN = Path(__file__).parent / "golden" / "debian"


@pytest.fixture()
def signed_release(tmp_path: Path) -> tuple[Path, Path, Path]:
    """Copies of (InRelease, the xz index it lists, the keyring holding its key) from
    tests/golden/debian: INDEX_TEXT signed once with a throwaway key (its README says how)."""
    if shutil.which("gpgv") is None:
        pytest.skip("gpgv (Debian's gpgv package) is needed to check a signed release")
    for name in ("InRelease", "Translation-en.xz", "keyring.gpg"):
        shutil.copy(GOLDEN / name, tmp_path / name)
    return tmp_path / "InRelease", tmp_path / "Translation-en.xz", tmp_path / "keyring.gpg"


def test_the_golden_index_is_index_text() -> None:
    assert lzma.decompress((GOLDEN / "Translation-en.xz").read_bytes()).decode() == INDEX_TEXT


def test_fetch_english_from_signed_files(signed_release: tuple[Path, Path, Path], tmp_path: Path) -> None:
    inrelease, index, keyring = signed_release
    summary = fetch_english(tmp_path / "cache", tmp_path / "out", inrelease=inrelease, index=index, keyring=keyring)
    assert summary["release_date"] == "Sat, 11 Jul 2026 10:16:37 UTC"
    assert summary["index_sha256"] == hashlib.sha256(index.read_bytes()).hexdigest()
    assert summary["total"]["documents"] == 2 and summary["style"] == "sdr"
    lines = [json.loads(ln) for name in ("train", "validation", "test") for ln in (tmp_path / "out" / f"{name}.jsonl").read_text().splitlines()]
    assert sorted(d["source"] for d in lines) == ["Translation-en:libfoo-dev", "Translation-en:libfoo1"]
    assert all(d["text"] == d["text"].lower() for d in lines)


def test_an_index_the_release_does_not_list_is_refused(signed_release: tuple[Path, Path, Path], tmp_path: Path) -> None:
    inrelease, index, keyring = signed_release
    index.write_bytes(lzma.compress(INDEX_TEXT.replace("fast", "slow").encode()))
    with pytest.raises(CorpusError, match="is not the .* that the signed release lists"):
        fetch_english(tmp_path / "cache", tmp_path / "out", inrelease=inrelease, index=index, keyring=keyring)
    assert not (tmp_path / "out").exists()


def test_a_tampered_or_foreign_release_is_refused(signed_release: tuple[Path, Path, Path], tmp_path: Path) -> None:
    inrelease, index, keyring = signed_release
    text = inrelease.read_text()
    tampered = tmp_path / "Tampered"
    tampered.write_text(text.replace("2026", "2027", 1))
    with pytest.raises(CorpusError, match="signature not accepted"):
        fetch_english(tmp_path / "cache", tmp_path / "out", inrelease=tampered, index=index, keyring=keyring)
    other = tmp_path / "other.gpg"
    other.write_bytes(b"")
    with pytest.raises(CorpusError, match="signature not accepted"):
        fetch_english(tmp_path / "cache", tmp_path / "out", inrelease=inrelease, index=index, keyring=other)
    with pytest.raises(CorpusError, match="not found"):
        fetch_english(tmp_path / "cache", tmp_path / "out", inrelease=inrelease, index=index, keyring=tmp_path / "none.gpg")
    with pytest.raises(CorpusError, match="none.asc: no such file"):
        fetch_english(tmp_path / "cache", tmp_path / "out", inrelease=tmp_path / "none.asc", index=index, keyring=keyring)
    with pytest.raises(CorpusError, match="none.xz: no such file"):
        fetch_english(tmp_path / "cache", tmp_path / "out", inrelease=inrelease, index=tmp_path / "none.xz", keyring=keyring)


def test_offline_english_exits_1_with_one_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setattr(debian, "MIRROR", "http://127.0.0.1:9")  # nothing listens on the discard port
    assert main(["english", "--cache", str(tmp_path / "c"), "--out", str(tmp_path / "o")]) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert err.startswith("python -m engine.corpus english: error: could not download http://127.0.0.1:9/dists/")
    assert not (tmp_path / "c" / f"{debian.SUITE}-InRelease").exists()
