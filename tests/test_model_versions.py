"""Model versions in the app: the fine-tunes under DATA/models are listed with their lineage, an
admin promotes one to the default (audited, kept across restarts, followed by svc.ckpt), a fine-tune
that forgets or was never checked is refused with the reason, and the Audit screen compares
versions."""

from __future__ import annotations

import json
import shutil

import pytest
from sqlalchemy import select

from app import admin, audit
from app.services import build_services
from engine import checkpoint
from storage import reports
from storage import repository as repo
from storage.db import transaction
from storage.models import AuditEvent


def _fine_tune(tiny, models_dir, name, gate):
    """A copy of the tiny model posing as a fine-tune of it, with the given forgetting check."""
    folder = models_dir / name / "model"
    shutil.copytree(tiny, folder)
    parent = checkpoint.load(tiny).model_id
    checkpoint.amend(folder, lineage={"version": name, "parent": parent},
                     meta={"test_gate": gate} if gate is not None else None)
    return checkpoint.load(folder).model_id


GOOD = {"change": 0.004, "tolerance": 0.02, "parent_bits_per_token": 8.1, "bits_per_token": 8.13}
FORGETS = {"change": 0.031, "tolerance": 0.02, "parent_bits_per_token": 8.1, "bits_per_token": 8.35}


@pytest.fixture
def versions(app_services, tiny_model_dir):
    models = app_services.models_dir
    return {"good": _fine_tune(tiny_model_dir, models, "good", GOOD),
            "forgets": _fine_tune(tiny_model_dir, models, "forgets", FORGETS),
            "unchecked": _fine_tune(tiny_model_dir, models, "unchecked", None)}


def test_admin_lists_versions_with_lineage_and_whether_they_may_be_promoted(app_services, versions):
    up = admin.list_users(app_services, "adam")
    rows = {r[0]: r for r in up.versions}
    start = app_services.model_id
    assert set(up.version_ids) == {start, *versions.values()}
    assert rows["good"][2] == start and rows["good"][3] == "+0.40 %" and rows["good"][4] == "yes"
    assert rows["forgets"][4].startswith("no: version forgets worsens the test-split bound by 3.1 %")
    assert [r[5] for r in up.versions].count("default") == 1


def test_promotion_is_refused_for_a_fine_tune_that_forgets_or_was_never_checked(app_services, versions):
    start = app_services.model_id
    up = admin.promote(app_services, "adam", versions["forgets"])
    assert up.kind == "error" and "tolerance is 2 %" in up.message and "not promoted" in up.message
    up = admin.promote(app_services, "adam", versions["unchecked"])
    assert up.kind == "error" and "without a test-split check" in up.message
    assert app_services.model_id == start
    with app_services.reader() as s:  # each refusal is in the audit trail, nothing was stored
        refused = s.scalars(select(AuditEvent).where(AuditEvent.action == "setting.refused")).all()
        assert [json.loads(e.new_value)["default_model"] for e in refused] == [versions["forgets"], versions["unchecked"]]
        assert "not promoted" in refused[0].reason and repo.get_setting(s, repo.DEFAULT_MODEL) == ""
    assert admin.promote(app_services, "maya", versions["good"]).kind == "error"  # a manager may not


def test_promotion_changes_the_default_is_audited_and_survives_a_restart(app_services, versions, tiny_model_dir):
    up = admin.promote(app_services, "adam", versions["good"], "fewer edits on the house terms")
    assert up.kind == "ok", up.message
    assert app_services.model_id == versions["good"] == app_services.ckpt.model_id
    assert app_services.ckpt.parent == checkpoint.load(tiny_model_dir).model_id
    with app_services.reader() as s:
        ev = s.scalars(select(AuditEvent).where(AuditEvent.action == "setting.change")).one()
        assert json.loads(ev.new_value) == {"default_model": versions["good"]} and ev.actor == "adam"
    again = build_services(tiny_model_dir, data_dir=app_services.data_dir, login_delay_s=0.0, sync_templates=False)
    try:
        assert again.model_id == versions["good"]
    finally:
        again.close()
    # the start model can be made the default again
    assert admin.promote(app_services, "adam", checkpoint.load(tiny_model_dir).model_id).kind == "ok"


def test_a_missing_promoted_model_falls_back_to_the_start_model(app_services, versions, tiny_model_dir):
    assert admin.promote(app_services, "adam", versions["good"]).kind == "ok"
    shutil.rmtree(app_services.models_dir / "good")
    again = build_services(tiny_model_dir, data_dir=app_services.data_dir, login_delay_s=0.0, sync_templates=False)
    try:
        assert again.model_id == checkpoint.load(tiny_model_dir).model_id
    finally:
        again.close()


def _doc(s, model, *, edits=0, pins=0, decision=None):
    d = repo.create_document(s, actor="olga", title="t")
    r = repo.create_run(s, document_id=d.id, actor="olga", model_id=model, model_checksum="ab" * 32, seed=1,
                        sampler_settings={})
    repo.record_step(s, r.id, 0, list(range(100, 110)), [0.5] * 10)
    for i in range(edits):
        repo.record_run_edit(s, document_id=d.id, actor="alice", run_id=r.id, step_index=0, span_start=i,
                             span_end=i + 1, old_text="a", new_text="b", reason="fix")
    for i in range(pins):
        repo.add_pin(s, document_id=d.id, actor="alice", run_id=r.id, step_index=0, span_start=5 + i, span_end=6 + i,
                     text="p")
    return d.id, decision


def test_version_stats_compare_edits_pins_and_approval_per_model(factory):
    with transaction(factory) as s:
        docs = [_doc(s, "old@1", edits=2, pins=1, decision="reject"), _doc(s, "old@1", edits=2, decision="approve"),
                _doc(s, "new@2", decision="approve"), _doc(s, "new@2", pins=1, decision="approve"),
                _doc(s, "new@2")]
    for doc_id, decision in docs:
        if decision is None:
            continue
        with transaction(factory) as s:
            v = repo.get_document(s, doc_id).version
            repo.update_document(s, doc_id, actor="olga", expected_version=v, status="awaiting_review")
        with transaction(factory) as s:
            v = repo.get_document(s, doc_id).version
            repo.record_review(s, document_id=doc_id, actor="bob", decision=decision, expected_version=v,
                               signature_meaning="reviewed", reason="no" if decision == "reject" else None)
    with transaction(factory) as s:
        stats = {v.model_id: v for v in reports.version_stats(s)}
    old, new = stats["old@1"], stats["new@2"]
    assert (old.drafts, old.edits_per_draft, old.pins_per_draft, old.approval_rate) == (2, 2.0, 0.5, 0.5)
    assert (new.drafts, new.edits_per_draft, new.approved, new.approval_rate) == (3, 0.0, 2, 1.0)
    assert abs(new.pins_per_draft - 1 / 3) < 1e-9


def test_audit_screen_shows_the_version_table(app_services):
    with transaction(app_services.factory) as s:
        _doc(s, app_services.model_id, edits=1)
    up = audit.feedback_charts(app_services, "maya")
    assert up.versions == [[app_services.model_id, 1, 1.0, 0.0, 0, 0, ""]]
    assert audit.feedback_charts(app_services, "olga").kind == "error"



def test_a_run_goes_on_with_its_own_model_after_a_promotion(app_services, versions):
    """A draft started before a promotion is resumed and branched with the model it recorded;
    a new draft uses the promoted one."""
    from app import draft, runs
    from app.state import DraftState

    svc = app_services
    start = svc.model_id
    gen = draft.generate(svc, "alice", DraftState(), template=None, length=24, steps=6, seed=1, temperature=1.0)
    st = next(gen).state
    assert draft.pause(svc, "alice", st).kind == "info"
    list(gen)
    assert admin.promote(svc, "adam", versions["good"], "better").kind == "ok"
    assert svc.model_id == versions["good"]
    assert list(draft.resume(svc, "alice", st))[-1].kind == "ok"
    assert runs.control_for(svc, st).model_id == start
    assert svc.denoiser_for(start) is not svc.denoiser_for(versions["good"])  # each version its own batcher
    new = list(draft.generate(svc, "alice", DraftState(), template=None, length=24, steps=3, seed=1,
                              temperature=1.0))[-1].state
    with svc.reader() as s:
        assert repo.get_run(s, st.run_id).model_id == start
        assert repo.get_run(s, new.run_id).model_id == versions["good"]
    back = draft.view_step(svc, "alice", st, 2)  # a branch of the old run keeps the old model
    assert back.kind != "error", back.message
    branch = list(draft.resume(svc, "alice", st))[-1].state
    with svc.reader() as s:
        assert repo.get_run(s, branch.run_id).model_id == start
