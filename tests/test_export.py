"""export.py: every format read back with pandas and compared, formula neutralisation, filters,
exports recorded as audit events, the CLI."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from datetime import datetime, timedelta, timezone
from pathlib import Path

import openpyxl
import pandas as pd
import pytest
from sqlalchemy import select, text

import storage_fixtures as sf
from storage import repository as repo
from storage.audit import AuditFilter, append_event, verify_chain
from storage.db import transaction
from storage.errors import PermissionDenied, ValidationError
from storage.export import (
    AUDIT_COLUMNS,
    audit_frame,
    edit_pairs_frame,
    export_audit,
    feedback_frame,
    main as export_main,
    neutralise,
    read_frame,
)
from storage.models import AuditEvent, Export

ROOT = Path(__file__).resolve().parent.parent
NASTY = [
    "=HYPERLINK(\"http://evil.example\",\"click\")", "+1+1", "-2+3", "@SUM(A1:A9)", "\tTAB=1", "\r=1",
    "=cmd|' /C calc'!A0", "NA", "null", "None", "", "caf\u00e9 \u2014 \u6f22\u5b57", "line one\nline two",
    "  leading spaces", "007",
]


@pytest.fixture
def trail(factory):
    """A template, a document, and events whose reasons and values are spreadsheet traps."""
    with transaction(factory) as s:
        t = repo.create_template(s, actor="maya", name="incident", body="Incident: {{slot:20}}")
        d = repo.create_document(s, actor="olga", title="=1+1 title", template_id=t.id)
        other = repo.create_document(s, actor="olga", title="other")
        for value in NASTY:  # reasons are stored stripped; object ids as given
            append_event(s, "alice", "reviewer", "edit", "note", value or "empty", document_id=d.id,
                         old={"text": value}, new=value or -5, reason=value if value.strip() else None)
        append_event(s, "bob", "reviewer", "edit", "document", other.id, new="=2+2")
    return {"template": t.id, "document": d.id, "other": other.id}


def test_neutralise():
    assert [neutralise(v) for v in ("=1", "+1", "-1", "@x", "\tx", "\rx")] == ["'=1", "'+1", "'-1", "'@x", "'\tx",
                                                                                 "'\rx"]
    assert [neutralise(v) for v in ("a=1", "'=1", "", None, 5, -5)] == ["a=1", "'=1", "", None, 5, -5]


@pytest.mark.parametrize("fmt", ["csv", "xlsx", "parquet", "json"])
def test_round_trip_every_format(factory, trail, tmp_path, fmt):
    path = tmp_path / f"audit.{fmt}"
    with transaction(factory) as s:
        expected = audit_frame(s)
        record = export_audit(s, path, actor="maya")
    back = read_frame(path)
    if fmt == "xlsx":  # XML turns carriage returns into line feeds (documented in docs/STORAGE.md)
        expected = expected.replace({r"\r\n?": "\n"}, regex=True)
    pd.testing.assert_frame_equal(back, expected)
    assert list(back.columns) == list(AUDIT_COLUMNS) and record.row_count == len(expected) > len(NASTY)

    reasons, object_ids = set(back["reason"].dropna()), set(back["object_id"])
    assert {neutralise(v.strip()) for v in NASTY if v.strip()} <= reasons
    assert {neutralise(v) for v in NASTY if v and "\r" not in v} <= object_ids
    assert {"'=HYPERLINK(\"http://evil.example\",\"click\")", "'@SUM(A1:A9)", "'\tTAB=1"} <= object_ids
    assert ("'\n=1" if fmt == "xlsx" else "'\r=1") in object_ids
    assert {"NA", "null", "None", "007"} <= reasons  # text that looks like a missing value or a number stays text
    new_values = set(back["new_value"].dropna())
    assert json.dumps("=2+2") in new_values  # JSON text starts with a quote: nothing to neutralise
    assert "'-5" in new_values  # a bare JSON number that a spreadsheet would compute
    for col in back.columns:  # no text cell anywhere can start a formula
        if back[col].dtype == "string":
            assert not back[col].dropna().str.match(r"^[=+\-@\t\r]").any(), col


def test_xlsx_cells_are_text_never_formulas(factory, trail, tmp_path):
    path = tmp_path / "audit.xlsx"
    with transaction(factory) as s:
        export_audit(s, path, actor="maya")
    sheet = openpyxl.load_workbook(path).active
    kinds = {cell.data_type for row in sheet.iter_rows(min_row=2) for cell in row if cell.value is not None}
    assert "f" not in kinds and kinds <= {"s", "n"}


def test_filters(factory, trail):
    with transaction(factory) as s:
        ev = append_event(s, "maya", "manager", "note", "template", trail["template"], reason="manager note")
    t0 = ev.ts
    with sf.reader(factory)() as s:
        by_user = audit_frame(s, AuditFilter(user="bob"))
        assert set(by_user["actor"]) == {"bob"} and len(by_user) == 1
        assert set(audit_frame(s, AuditFilter(role="manager"))["actor"]) == {"maya"}
        assert set(audit_frame(s, AuditFilter(action="document.create"))["object_id"]) == {
            str(trail["document"]), str(trail["other"])}
        doc = audit_frame(s, AuditFilter(document_id=trail["document"]))
        assert len(doc) == len(NASTY) + 1 and set(doc["document_id"]) == {trail["document"]}
        tmpl = audit_frame(s, AuditFilter(template_id=trail["template"]))
        assert {"template.create", "document.create", "edit", "note"} == set(tmpl["action"])
        assert trail["other"] not in set(tmpl["document_id"].dropna())
        assert list(audit_frame(s, AuditFilter(since=t0))["action"]) == ["note"]
        assert "note" not in set(audit_frame(s, AuditFilter(until=t0))["action"])
        assert audit_frame(s, AuditFilter(since=t0 + timedelta(seconds=1))).empty
        with pytest.raises(ValidationError, match="date range is empty"):
            audit_frame(s, AuditFilter(since=t0, until=t0))
        with pytest.raises(ValidationError, match="timezone-aware"):
            audit_frame(s, AuditFilter(since=datetime(2020, 1, 1)))


def test_export_is_an_audit_event(factory, trail, tmp_path):
    path = tmp_path / "doc.parquet"
    with transaction(factory) as s:
        record = export_audit(s, path, actor="maya", filters=AuditFilter(document_id=trail["document"]))
    with sf.reader(factory)() as s:
        ev = s.scalars(select(AuditEvent).where(AuditEvent.action == "export")).one()
        new = json.loads(ev.new_value)
        assert (ev.actor, ev.role, ev.object_id, ev.document_id) == ("maya", "manager", str(record.id), trail["document"])
        assert new["sha256"] == hashlib.sha256(path.read_bytes()).hexdigest() == record.sha256
        assert new["filters"] == {"document_id": trail["document"]} and new["rows"] == len(NASTY) + 1
        assert s.get(Export, record.id).format == "parquet"
        assert verify_chain(s).ok


def test_refused_exports_write_nothing(factory, trail, tmp_path):
    tmp_path = tmp_path / "exports"
    tmp_path.mkdir()
    path = tmp_path / "audit.csv"
    with pytest.raises(PermissionDenied, match="reviewer and may not export"), transaction(factory) as s:
        export_audit(s, path, actor="alice")
    with pytest.raises(ValidationError, match="unknown export format"), transaction(factory) as s:
        export_audit(s, tmp_path / "audit.txt", "txt", actor="maya")
    with pytest.raises(ValidationError, match="does not exist"), transaction(factory) as s:
        export_audit(s, tmp_path / "no" / "audit.csv", actor="maya")
    # the database refuses the record after the file was written: the file must not appear
    with transaction(factory) as s:
        s.execute(text("DROP TABLE exports"))
    with pytest.raises(Exception), transaction(factory) as s:
        export_audit(s, path, actor="maya")
    assert list(tmp_path.iterdir()) == []


def test_feedback_frames(factory, trail):
    with transaction(factory) as s:
        r = repo.create_run(s, document_id=trail["document"], actor="olga", model_id="m1", model_checksum="c",
                            seed=1, sampler_settings={})
        repo.record_step(s, r.id, 0, [1, 2, 3], [0.5, 0.5, 0.5])
        repo.record_run_edit(s, document_id=trail["document"], actor="alice", run_id=r.id, step_index=0, span_start=0,
                             span_end=1, old_text="=bad", new_text="good", reason="fix")
    with sf.reader(factory)() as s:
        f = feedback_frame(s, "term")
        assert list(f["key"]) == ["'=bad"] and list(f["edits"]) == [1]
        pairs = edit_pairs_frame(s)
        assert list(pairs["old_text"]) == ["'=bad"] and list(pairs["model_id"]) == ["m1"]


def test_cli(factory, trail, db_url, tmp_path, capsys, monkeypatch):
    out = tmp_path / "trail.xlsx"
    code = export_main(["--out", str(out), "--db-url", db_url, "--actor", "maya", "--user", "alice",
                        "--template", "incident", "--since", "2000-01-01"])
    assert code == 0, capsys.readouterr().err
    assert "wrote" in capsys.readouterr().out
    back = read_frame(out)
    assert set(back["actor"]) == {"alice"} and len(back) == len(NASTY)

    monkeypatch.setenv("DIFFDRAFT_ACTOR", "alice")
    assert export_main(["--format", "csv", "--out", str(tmp_path / "x.csv"), "--db-url", db_url]) == 2
    assert "may not export" in capsys.readouterr().err
    assert not (tmp_path / "x.csv").exists()
    assert export_main(["--out", str(tmp_path / "x.csv"), "--db-url", db_url, "--actor", "maya",
                        "--role", "wizard"]) == 2
    assert "unknown role" in capsys.readouterr().err
    monkeypatch.delenv("DIFFDRAFT_ACTOR")
    with pytest.raises(SystemExit) as info:
        export_main(["--out", str(tmp_path / "x.csv"), "--db-url", db_url])
    assert info.value.code == 2 and "--actor" in capsys.readouterr().err


def test_cli_as_a_module(sqlite_url, cheap_argon2, tmp_path):
    from storage.db import make_engine, make_session_factory

    engine = make_engine(sqlite_url)
    sf.seed_users(make_session_factory(engine), {"maya": "manager"})
    engine.dispose()
    out = tmp_path / "all.json"
    run = subprocess.run([sys.executable, "-m", "storage.export", "--format", "json", "--out", str(out),
                          "--db-url", sqlite_url, "--actor", "maya", "--until",
                          (datetime.now(timezone.utc) + timedelta(days=1)).isoformat()],
                         cwd=ROOT, capture_output=True, text=True, timeout=90)
    assert run.returncode == 0, run.stderr
    assert list(read_frame(out)["action"]) == ["user.create"]
