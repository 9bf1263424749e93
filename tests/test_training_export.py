"""storage.training_export: what QA feedback becomes as training files, who may export it, that it
is audited, that rejected drafts never count as positives and that no user names are written."""

from __future__ import annotations

import json

import pytest
from sqlalchemy import select

import storage_fixtures as sf
from storage import repository as repo
from storage.audit import verify_chain
from storage.db import transaction
from storage.errors import PermissionDenied
from storage.export import main as export_main
from storage.models import AuditEvent, Export
from storage.training_export import _char_positions, export_training, locate, training_data


def _document(s, template_id: int, title: str, text: str) -> tuple[int, int]:
    d = repo.create_document(s, actor="olga", title=title, template_id=template_id, text=text)
    r = repo.create_run(s, document_id=d.id, actor="olga", model_id="sfdlm@aaa", model_checksum="ab" * 32, seed=1,
                        sampler_settings={"steps": 2})
    for i in range(2):
        repo.record_step(s, r.id, i, [100 + i] * 10, [0.5] * 10)
    return d.id, r.id


def _submit_and_review(factory, doc_id: int, decision: str, reason: str | None = None) -> None:
    with transaction(factory) as s:
        d = repo.get_document(s, doc_id)
        repo.update_document(s, doc_id, actor="olga", expected_version=d.version, status="awaiting_review")
    with transaction(factory) as s:
        d = repo.get_document(s, doc_id)
        repo.record_review(s, document_id=doc_id, actor="bob", decision=decision, expected_version=d.version,
                           signature_meaning="reviewed", reason=reason)


@pytest.fixture
def feedback(factory):
    """An approved document with a token edit and a locked term, a rejected one with an edit, and
    a draft with two char edits (the second moves the first)."""
    with transaction(factory) as s:
        t = repo.create_template(s, actor="maya", name="finding", body="Finding: {{slot:10}}")
        good, good_run = _document(s, t.id, "alice's pump", "found leak iaw amm. replaced seal per amm.")
        repo.record_run_edit(s, document_id=good, actor="alice", run_id=good_run, step_index=1, span_start=2,
                             span_end=3, old_text=" iaw", new_text=" per", reason="house style: per")
        repo.add_term_pins(s, document_id=good, actor="alice", run_id=good_run, step_index=1, term="amm",
                           spans=[(4, 5)])
        bad, bad_run = _document(s, t.id, "bad one", "engine fell off per amm.")
        repo.record_run_edit(s, document_id=bad, actor="alice", run_id=bad_run, step_index=1, span_start=0,
                             span_end=1, old_text="engine", new_text="motor", reason="wording")
        draft = repo.create_document(s, actor="olga", title="draft", template_id=t.id, text="abc def ghi").id
    # "found leak per amm. replaced seal per amm.": the edit's new text sits at the first " per"
    with transaction(factory) as s:
        d = repo.get_document(s, good)
        repo.update_document(s, good, actor="olga", expected_version=d.version,
                             text="found leak per amm. replaced seal per amm.")
    _submit_and_review(factory, good, "approve")
    _submit_and_review(factory, bad, "reject", reason="not a real finding")
    with transaction(factory) as s:
        v = repo.get_document(s, draft).version
        repo.record_text_edit(s, document_id=draft, actor="alice", span_start=4, span_end=7, old_text="def",
                              new_text="DEFG", reason="caps", expected_version=v)
    with transaction(factory) as s:
        v = repo.get_document(s, draft).version
        repo.record_text_edit(s, document_id=draft, actor="alice", span_start=0, span_end=3, old_text="abc",
                              new_text="a", reason="short", expected_version=v)
    return {"good": good, "bad": bad, "draft": draft}


def test_rows_hold_approved_text_edit_context_terms_and_rejections(factory, feedback):
    with transaction(factory) as s:
        data = training_data(s, actor="maya")
    assert [r["text"] for r in data.approved] == ["found leak per amm. replaced seal per amm."]
    assert data.approved[0]["template"] == "finding" and data.approved[0]["model_id"] == "sfdlm@aaa"
    by_doc = {}
    for r in data.edits:
        by_doc.setdefault(r["document"], []).append(r)
    assert feedback["bad"] not in by_doc  # a rejected draft's edits are not positives
    (tok_edit,) = by_doc[feedback["good"]]
    assert (tok_edit["before"], tok_edit["new_text"], tok_edit["after"]) == ("found leak", " per",
                                                                           " amm. replaced seal per amm.")
    first, second = by_doc[feedback["draft"]]
    assert first["before"] + first["new_text"] + first["after"] == "a DEFG ghi"
    assert (first["before"], second["before"]) == ("a ", "")
    assert data.terms == [{"template": "finding", "term": "amm", "count": 1}]
    assert [(r["text"], r["reasons"]) for r in data.rejected] == [("engine fell off per amm.", ["not a real finding"])]


def test_locate_prefers_the_occurrence_nearest_the_hint():
    text = "per one per two per"
    assert locate(text, "per", 0.0) == 0
    assert locate(text, "per", 0.5) == 8
    assert locate(text, "per", 1.0) == 16
    assert locate(text, "nope", 0.5) is None and locate(text, "", 0.5) is None


def test_an_overwritten_char_edit_has_no_context():
    class E:  # the fields _char_positions reads
        def __init__(self, i, s, e, new):
            self.id, self.span_start, self.span_end, self.new_text = i, s, e, new

    # "abc" -> "aXc" (edit 1 at 1), then [0, 3) replaced wholly: edit 1 is gone from the final text
    assert _char_positions([E(1, 1, 2, "X"), E(2, 0, 3, "zz")], "zz") == {1: None, 2: 0}


def test_export_writes_files_is_audited_and_holds_no_user_names(factory, feedback, tmp_path):
    out = tmp_path / "fb"
    with transaction(factory) as s:
        record = export_training(s, out, actor="maya")
        export_id = record.id
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["kind"] == "training" and manifest["counts"] == {"approved": 1, "edits": 3, "terms": 1,
                                                                     "rejected": 1}
    blob = "".join((out / name).read_text() for name in manifest["files"])
    for name in sf.USERS:
        assert name not in blob
    assert "alice's pump" not in blob  # titles are not written
    with transaction(factory) as s:
        ev = s.scalars(select(AuditEvent).where(AuditEvent.action == "export")).one()
        assert ev.actor == "maya" and json.loads(ev.new_value)["kind"] == "training"
        assert s.get(Export, export_id).filters == {"kind": "training"}
        assert verify_chain(s).ok


@pytest.mark.parametrize("who", ["alice", "olga"])
def test_roles_that_may_not_read_feedback_cannot_export_it(factory, feedback, tmp_path, who):
    with transaction(factory) as s, pytest.raises(PermissionDenied):
        export_training(s, tmp_path / "fb", actor=who)
    assert not (tmp_path / "fb").exists()


def test_cli(factory, feedback, tmp_path, capsys, db_url):
    assert export_main(["training", "--db-url", db_url, "--out", str(tmp_path / "fb"), "--actor", "adam"]) == 0
    assert "1 approved, 3 edits, 1 terms, 1 rejected" in capsys.readouterr().out
    assert export_main(["training", "--db-url", db_url, "--out", str(tmp_path / "x"), "--actor", "olga"]) == 2
    assert "may not" in capsys.readouterr().err
