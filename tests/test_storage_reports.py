"""storage.reports: the QA chart frames and the audit screen's filter lists, from a Session."""

from __future__ import annotations

from datetime import timedelta

import pytest
import storage_fixtures as sf

from storage import reports
from storage import repository as repo
from storage.db import transaction
from storage.models import ROLES, utcnow


@pytest.fixture
def runs(factory):
    """A template and a document with two runs of model "m1" (one pinned twice) and one of "m2"."""
    with transaction(factory) as s:
        t = repo.create_template(s, actor="maya", name="inspection", body="Finding: {{slot:12}}")
        d = repo.create_document(s, actor="olga", title="Pump 7", template_id=t.id)
        ids = []
        for model in ("m1", "m1", "m2"):
            r = repo.create_run(s, document_id=d.id, actor="olga", model_id=model, model_checksum="ab" * 32, seed=1,
                                sampler_settings={"steps": 2})
            repo.record_step(s, r.id, 0, [100] * 12, [0.5] * 12, t=1.0)
            ids.append(r.id)
        for start in (0, 4):
            repo.add_pin(s, document_id=d.id, actor="alice", run_id=ids[0], step_index=0, span_start=start,
                         span_end=start + 2, text="pump")
    return ids


def test_feedback_frames(factory, runs):
    with sf.reader(factory)() as s:
        frames = reports.feedback_frames(s, since=utcnow() - timedelta(days=1))
        assert reports.runs_per_model(s) == {"m1": 2, "m2": 1}
        assert reports.pins_per_model(s) == {"m1": 2}
        later = reports.events_per_day(s, since=utcnow() + timedelta(hours=1))
    assert set(frames) == {"per_day", "per_template", "per_term", "pin_rate"}
    assert list(frames["per_day"].columns) == ["day", "events"] and frames["per_day"]["events"].sum() > 0
    assert later == []
    assert frames["per_template"].values.tolist() == [["inspection", 0, 2]]
    assert frames["per_term"].values.tolist() == [["pump", 0, 2]]
    rate = {m: (r, n) for m, r, n in frames["pin_rate"].values.tolist()}
    assert rate == {"m1": (1.0, 2), "m2": (0.0, 1)}


def test_audit_choices(factory, runs):
    with sf.reader(factory)() as s:
        c = reports.audit_choices(s)
    assert c["roles"] == list(ROLES) and c["templates"] == ["inspection"]
    assert set(sf.USERS) <= set(c["users"])
    assert c["actions"] == sorted(c["actions"]) and {"run.start", "pin.add", "template.create"} <= set(c["actions"])
