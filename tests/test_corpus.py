"""Corpus: loaders and their skip reports, normalisation, de-duplication, splits, the SDR fetch
path on a fake wheel (no network), and the CLI."""

from __future__ import annotations

import json
import os
import subprocess
import zipfile
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from engine.corpus import fetch
from engine.corpus.__main__ import build_parser, main
from engine.corpus.fetch import SDR_FIXED_SPLIT, SDR_WHEEL_NAME, fetch_sdr, sha256_of
from engine.corpus.loaders import load_documents
from engine.corpus.prepare import prepare
from engine.corpus.splits import SPLITS, assign_groups, parse_fractions, read_split, split_random
from engine.corpus.text import CorpusError, Document, LoadResult, dedupe, normalise

# ------------------------------------------------------------------ helpers


def _reasons(result: LoadResult) -> dict[str, str]:
    return {s.source: s.reason for s in result.skipped}


def _fake_wheel(path: Path, files: dict[str, bytes]) -> Path:
    """A zip laid out like the SDR wheel: code, data/*.csv, dist-info."""
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("sdr_hazards_classification/__init__.py", "")
        for name, body in files.items():
            zf.writestr(f"sdr_hazards_classification/data/{name}", body)
        zf.writestr("sdr_hazards_classification/model/x.model", b"\x00\x01")
        zf.writestr("sdr_hazards_classification-1.0.0.dist-info/LICENSE", "MIT")
    return path


def _csv(rows: list[str], header: str = "Id,Text,Label") -> bytes:
    lines = [header] + [f'{i},"{t}",Yes' for i, t in enumerate(rows, start=1)]
    return ("\r\n".join(lines) + "\r\n").encode("utf-8")


FAKE_FILES = {
    # 8 reports; one repeats a report of B.csv with other whitespace, so it stays in A.csv
    "A.csv": _csv([f"alpha report {i} hydraulic pump leak" for i in range(7)] + ["shared  report\nacross files"]),
    "B.csv": _csv(["shared report across files", "beta report one", "beta report one"]),
    # Windows-1252 bytes: 0x92 is a right single quote
    "C.csv": b"EventID,Text,Label,,\r\n1,captain\x92s yoke vibrated,No,,\r\n2,gamma two,No,,\r\n",
    "D.csv": _csv(["delta one", "delta two", ""]),
    "SDR_Example.csv": _csv(["EXAMPLE REPORT ONE"], header="EventId,Text,Label"),
}


@pytest.fixture()
def fake_wheel(tmp_path: Path) -> Path:
    return _fake_wheel(tmp_path / SDR_WHEEL_NAME, FAKE_FILES)


# ------------------------------------------------------------------ normalisation, de-dup


def test_normalise_whitespace_and_nfc() -> None:
    assert normalise("  pump\t\tleak\r\n\nfound\u00a0here  ") == "pump leak found here"
    assert normalise("cafe\u0301") == "caf\u00e9"  # combining accent -> one code point
    assert normalise(" \n\t ") == ""


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=60))
def test_normalise_is_idempotent(text: str) -> None:
    once = normalise(text)
    assert normalise(once) == once
    assert "  " not in once and once == once.strip()


def test_dedupe_keeps_first_in_order() -> None:
    docs = [Document("a b", "1"), Document("c", "2"), Document("a  b", "3"), Document("c", "4"), Document("d", "5")]
    assert [d.source for d in dedupe(docs)] == ["1", "2", "5"]


# ------------------------------------------------------------------ loaders


def test_folder_loader_reports_bad_files(tmp_path: Path) -> None:
    root = tmp_path / "docs"
    (root / "sub").mkdir(parents=True)
    (root / "a.txt").write_text("Hydraulic  pump\nleak.", encoding="utf-8")
    (root / "sub" / "b.md").write_text("# Shift\n\nAll good.", encoding="utf-8")
    (root / "empty.txt").write_text("  \n", encoding="utf-8")
    (root / "binary.txt").write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00\x00")
    (root / "latin.txt").write_bytes("caf\u00e9 au lait".encode("latin-1"))
    (root / "notes.rst").write_text("not ours", encoding="utf-8")
    (root / ".hidden.txt").write_text("ignored", encoding="utf-8")
    result = load_documents(root)
    assert [(d.source, d.text) for d in result.documents] == [
        ("a.txt", "Hydraulic pump leak."),
        ("sub/b.md", "# Shift All good."),
    ]
    reasons = _reasons(result)
    assert set(reasons) == {"empty.txt", "binary.txt", "latin.txt", "notes.rst"}
    assert "empty" in reasons["empty.txt"]
    assert "binary" in reasons["binary.txt"]
    assert "not UTF-8" in reasons["latin.txt"] and "0xE9" in reasons["latin.txt"]
    assert "not a .txt or .md" in reasons["notes.rst"]


def test_utf8_bom_is_dropped(tmp_path: Path) -> None:
    (tmp_path / "bom.txt").write_bytes(b"\xef\xbb\xbfvalve replaced")
    assert load_documents(tmp_path / "bom.txt").documents == [Document("valve replaced", "bom.txt")]


def test_jsonl_good_and_bad_lines(tmp_path: Path) -> None:
    lines = [
        b'{"text": "first report", "id": 1}',
        b"",  # blank: ignored, not reported
        b"{not json",
        b'["a", "list"]',
        b'{"body": "no text field"}',
        b'{"text": 42}',
        b'{"text": "   "}',
        '{"text": "caf\u00e9"}'.encode("latin-1"),
        '{"text": "second  report \u2013 ok"}'.encode("utf-8"),
    ]
    path = tmp_path / "docs.jsonl"
    path.write_bytes(b"\n".join(lines) + b"\n")
    result = load_documents(path)
    assert [(d.source, d.text) for d in result.documents] == [
        ("docs.jsonl:1", "first report"),
        ("docs.jsonl:9", "second report \u2013 ok"),
    ]
    reasons = _reasons(result)
    assert sorted(reasons) == [f"docs.jsonl:{n}" for n in (3, 4, 5, 6, 7, 8)]
    assert "not valid JSON" in reasons["docs.jsonl:3"]
    assert "not a JSON object" in reasons["docs.jsonl:4"]
    assert "'text'" in reasons["docs.jsonl:5"] and "'text'" in reasons["docs.jsonl:6"]
    assert "empty" in reasons["docs.jsonl:7"]
    assert "not UTF-8" in reasons["docs.jsonl:8"]


def test_csv_column_empty_cells_and_line_numbers(tmp_path: Path) -> None:
    path = tmp_path / "reports.csv"
    path.write_text(
        'id,body,label\n1,"pump leak,\nfound at gate",x\n2,,y\n3\n4,"  valve  ",z\n', encoding="utf-8", newline=""
    )
    result = load_documents(path, column="body")
    # a quoted cell spans lines 2-3, so record 2 starts on line 4
    assert [(d.source, d.text) for d in result.documents] == [
        ("reports.csv:2", "pump leak, found at gate"),
        ("reports.csv:6", "valve"),
    ]
    assert set(_reasons(result)) == {"reports.csv:4", "reports.csv:5"}
    assert all("empty cell" in r for r in _reasons(result).values())


def test_csv_default_column_is_text(tmp_path: Path) -> None:
    path = tmp_path / "r.csv"
    path.write_text("text\nhello there\n", encoding="utf-8")
    assert [d.text for d in load_documents(path).documents] == ["hello there"]


def test_csv_missing_column_is_a_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "r.csv"
    path.write_text("id,body\n1,x\n", encoding="utf-8")
    with pytest.raises(CorpusError, match=r"r\.csv has no column 'text'; its columns are 'id', 'body'"):
        load_documents(path)


def test_csv_not_utf8_is_skipped_whole(tmp_path: Path) -> None:
    path = tmp_path / "r.csv"
    path.write_bytes("text\ncaf\u00e9\n".encode("latin-1"))
    result = load_documents(path)
    assert result.documents == [] and "not UTF-8" in _reasons(result)["r.csv"]


def test_loader_argument_errors(tmp_path: Path) -> None:
    with pytest.raises(CorpusError, match="does not exist"):
        load_documents(tmp_path / "nope")
    (tmp_path / "x.pdf").write_bytes(b"%PDF")
    with pytest.raises(CorpusError, match="expected a folder"):
        load_documents(tmp_path / "x.pdf")
    with pytest.raises(CorpusError, match="--column applies to .csv"):
        load_documents(tmp_path, column="body")


# ------------------------------------------------------------------ splits


def _docs(n: int) -> list[Document]:
    return [Document(f"report {i}", f"f{i % 7}/d{i}.txt") for i in range(n)]


def test_random_split_is_deterministic_partition() -> None:
    docs = _docs(200)
    a = split_random(docs, (0.8, 0.1, 0.1), seed=3)
    assert a == split_random(docs, (0.8, 0.1, 0.1), seed=3)
    assert a != split_random(docs, (0.8, 0.1, 0.1), seed=4)
    assert [len(a[s]) for s in SPLITS] == [160, 20, 20]
    sources = [d.source for s in SPLITS for d in a[s]]
    assert sorted(sources) == sorted(d.source for d in docs)  # disjoint and complete
    for s in SPLITS:  # each split keeps reading order
        assert a[s] == [d for d in docs if d in a[s]]


def test_parse_fractions() -> None:
    assert parse_fractions("0.8,0.1,0.1") == (0.8, 0.1, 0.1)
    assert parse_fractions("1,0,0") == (1.0, 0.0, 0.0)
    for bad in ("0.8,0.2", "0.5,0.5,0.5", "a,b,c", "0,0.5,0.5", "1.2,-0.1,-0.1"):
        with pytest.raises(ValueError):
            parse_fractions(bad)


@settings(max_examples=100, deadline=None)
@given(st.dictionaries(st.text("abcdef", min_size=1, max_size=4), st.integers(1, 500), min_size=1, max_size=12))
def test_assign_groups_puts_each_group_in_one_split(sizes: dict[str, int]) -> None:
    assignment = assign_groups(sizes)
    assert set(assignment) == set(sizes) and set(assignment.values()) <= set(SPLITS)
    assert assignment == assign_groups(dict(reversed(list(sizes.items()))))  # order of input irrelevant


def test_assign_groups_near_fractions() -> None:
    sizes = {f"g{i}": 10 + i for i in range(30)}
    assignment = assign_groups(sizes, (0.8, 0.1, 0.1))
    total = sum(sizes.values())
    for split, share in zip(SPLITS, (0.8, 0.1, 0.1)):
        got = sum(n for g, n in sizes.items() if assignment[g] == split) / total
        assert abs(got - share) < 0.05


def test_assign_groups_fixed_groups_count_towards_their_split() -> None:
    sizes, shares = {"big": 60, "upper": 20, "x": 10, "y": 10}, (0.6, 0.2, 0.2)
    assert assign_groups(sizes, shares) == {"big": "train", "upper": "validation", "x": "test", "y": "test"}
    fixed = assign_groups(sizes, shares, fixed={"upper": "train", "absent": "test"})
    assert fixed == {"upper": "train", "big": "train", "x": "validation", "y": "test"}
    with pytest.raises(ValueError):
        assign_groups(sizes, fixed={"x": "dev"})


def test_group_by_folder_keeps_folders_whole(tmp_path: Path) -> None:
    root = tmp_path / "docs"
    for folder, n in {"a": 16, "b": 2, "c": 2}.items():
        (root / folder).mkdir(parents=True)
        for i in range(n):
            (root / folder / f"{i}.txt").write_text(f"{folder} doc {i}", encoding="utf-8")
    summary, _ = prepare(root, tmp_path / "out", group_by_folder=True)
    seen: dict[str, str] = {}
    for split in SPLITS:
        for line in (tmp_path / "out" / f"{split}.jsonl").read_text(encoding="utf-8").splitlines():
            folder = json.loads(line)["source"].split("/")[0]
            assert seen.setdefault(folder, split) == split
    assert seen == {"a": "train", "b": "validation", "c": "test"}
    assert summary["splits"]["train"]["groups"] == ["a"]


# ------------------------------------------------------------------ SDR fetch, offline


def test_fetch_from_fake_wheel(fake_wheel: Path, tmp_path: Path) -> None:
    out = tmp_path / "corpus"
    summary = fetch_sdr(tmp_path / "cache", out, wheel=fake_wheel, verify=False)
    assert summary["read"] == 8 + 3 + 2 + 2 + 1
    assert summary["duplicates_dropped"] == 2  # the shared report and beta's repeat
    assert summary["skipped"] == [{"source": "D.csv:4", "reason": "empty cell in column 'Text'"}]
    files = summary["files"]
    assert [files[n]["documents"] for n in sorted(FAKE_FILES)] == [8, 1, 2, 2, 1]
    texts = {s: read_split(out, s) for s in SPLITS}
    everything = [t for s in SPLITS for t in texts[s]]
    assert len(everything) == len(set(everything)) == summary["total"]["documents"] == 14
    assert "captain\u2019s yoke vibrated" in everything  # Windows-1252 byte decoded
    assert "shared report across files" in everything
    # every category file whole in exactly one split, and splits.json agrees with the JSONL
    rows = {s: [json.loads(x) for x in (out / f"{s}.jsonl").read_text(encoding="utf-8").splitlines()] for s in SPLITS}
    for split in SPLITS:
        in_split = {r["source"].rpartition(":")[0] for r in rows[split]}
        assert in_split == {n for n in summary["splits"][split]["groups"] if files[n]["documents"]}
        assert all(files[n]["split"] == split for n in in_split)
        assert summary["splits"][split]["documents"] == len(rows[split])
        assert summary["splits"][split]["words"] == sum(len(r["text"].split()) for r in rows[split])
    shared = next(r for s in SPLITS for r in rows[s] if r["text"] == "shared report across files")
    assert shared["source"] == "A.csv:9"
    assert json.loads((out / "splits.json").read_text(encoding="utf-8")) == summary
    # same wheel, same output
    again = fetch_sdr(tmp_path / "cache", tmp_path / "again", wheel=fake_wheel, verify=False)
    assert again == summary


def test_fetch_checks_the_hash(fake_wheel: Path, tmp_path: Path) -> None:
    with pytest.raises(CorpusError, match="SHA-256"):
        fetch_sdr(tmp_path / "cache", tmp_path / "out", wheel=fake_wheel)
    assert not (tmp_path / "out").exists()


def test_fetch_rejects_a_wheel_without_data(tmp_path: Path) -> None:
    wheel = tmp_path / "empty.whl"
    with zipfile.ZipFile(wheel, "w") as zf:
        zf.writestr("sdr_hazards_classification/__init__.py", "")
    with pytest.raises(CorpusError, match="no sdr_hazards_classification/data"):
        fetch_sdr(tmp_path, tmp_path / "out", wheel=wheel, verify=False)


def test_cached_wheel_is_reused_without_pip(fake_wheel: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cache = tmp_path / "cache"
    cache.mkdir()
    cached = cache / SDR_WHEEL_NAME
    cached.write_bytes(fake_wheel.read_bytes())
    monkeypatch.setattr(fetch, "SDR_WHEEL_SHA256", sha256_of(cached))

    def no_pip(*args: object, **kwargs: object) -> None:
        raise AssertionError("pip must not run when the cached wheel is good")

    monkeypatch.setattr(fetch.subprocess, "run", no_pip)
    summary = fetch_sdr(cache, tmp_path / "out")
    assert summary["total"]["documents"] == 14


def test_offline_fetch_exits_1_with_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    calls: list[list[str]] = []

    def offline_pip(cmd: list[str], **kwargs: object) -> subprocess.CompletedProcess[str]:
        calls.append(cmd)
        err = (
            "WARNING: Retrying ... 'NewConnectionError(... Failed to establish a new connection ...)'\n"
            "ERROR: No matching distribution found for sdr-hazards-classification==1.0.0\n"
        )
        return subprocess.CompletedProcess(cmd, 1, "", err)

    monkeypatch.setattr(fetch.subprocess, "run", offline_pip)
    assert main(["fetch", "--cache", str(tmp_path / "cache"), "--out", str(tmp_path / "out")]) == 1
    assert calls and calls[0][1:4] == ["-m", "pip", "download"] and "--no-deps" in calls[0]
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "cannot reach the package index" in err


def test_fetch_cli_prints_sizes_and_assignment(
    fake_wheel: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(fetch, "SDR_WHEEL_SHA256", sha256_of(fake_wheel))
    out = tmp_path / "out"
    assert main(["fetch", "--wheel", str(fake_wheel), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert printed.splitlines()[0].split() == ["split", "documents", "words", "characters", "share"]
    assert "total" in printed and "A.csv" in printed and "train:" in printed
    assert all((out / f"{s}.jsonl").is_file() for s in SPLITS)


@pytest.mark.slow
def test_real_sdr_wheel() -> None:
    wheel = os.environ.get("DIFFDRAFT_SDR_WHEEL")
    if not wheel:
        pytest.skip("set DIFFDRAFT_SDR_WHEEL to the downloaded sdr_hazards_classification-1.0.0 wheel to run")
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        summary = fetch_sdr(tmp, Path(tmp) / "out", wheel=wheel)
        assert summary["wheel_sha256"] == fetch.SDR_WHEEL_SHA256
        assert 21_000 < summary["total"]["documents"] < 23_000
        assert 1_100_000 < summary["total"]["words"] < 1_250_000
        shares = [summary["splits"][s]["documents"] / summary["total"]["documents"] for s in SPLITS]
        assert abs(shares[0] - 0.8) < 0.03 and abs(shares[1] - 0.1) < 0.03 and abs(shares[2] - 0.1) < 0.03
        groups = [g for s in SPLITS for g in summary["splits"][s]["groups"]]
        assert len(groups) == len(set(groups)) == len(summary["files"]) == 17
        assert all(summary["files"][name]["split"] == "train" for name in SDR_FIXED_SPLIT)
        for split in ("validation", "test"):  # the upper-case files went to train
            texts = read_split(Path(tmp) / "out", split)
            assert not [t for t in texts if sum(c.isupper() for c in t) > sum(c.islower() for c in t)]


# ------------------------------------------------------------------ prepare, read_split, CLI


def test_prepare_cli_reports_skips(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    root = tmp_path / "mine"
    root.mkdir()
    for i in range(20):
        (root / f"{i:02d}.txt").write_text(f"report number {i}", encoding="utf-8")
    (root / "dup.txt").write_text("report  number 3", encoding="utf-8")
    (root / "bad.txt").write_bytes(b"\xff\xfe\x00b")
    out = tmp_path / "out"
    args = ["prepare", "--input", str(root), "--out", str(out), "--seed", "7"]
    assert main(args) == 0
    captured = capsys.readouterr()
    assert "skipped bad.txt: binary" in captured.err
    assert "read 21 documents, skipped 1, dropped 1 duplicates" in captured.out
    first = {s: read_split(out, s) for s in SPLITS}
    assert [len(first[s]) for s in SPLITS] == [16, 2, 2]
    assert main(args) == 0  # same seed, same files
    assert {s: read_split(out, s) for s in SPLITS} == first


def test_prepare_with_nothing_usable_exits_1(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "empty.txt").write_text("", encoding="utf-8")
    assert main(["prepare", "--input", str(tmp_path), "--out", str(tmp_path / "o")]) == 1
    assert "no documents read" in capsys.readouterr().err


def test_read_split_errors(tmp_path: Path) -> None:
    with pytest.raises(CorpusError, match="unknown split"):
        read_split(tmp_path, "dev")
    with pytest.raises(CorpusError, match="not found"):
        read_split(tmp_path, "train")


def test_help_explains_every_flag() -> None:
    parser = build_parser()
    sub = next(a for a in parser._actions if a.dest == "command").choices  # type: ignore[union-attr]
    for name in ("fetch", "prepare"):
        for action in sub[name]._actions:
            assert action.help, f"{name} {action.option_strings} has no help"
    with pytest.raises(SystemExit) as exc:
        parser.parse_args(["prepare", "--input", "x", "--out", "y", "--split", "0.5,0.5"])
    assert exc.value.code == 2
