"""storage.repository.run_state: a run's stored state with its version, the lease, and the pausing
of runs whose process died. On SQLite and PostgreSQL."""

from __future__ import annotations

import time

import pytest
from sqlalchemy import select

from storage import repository as repo
from storage.db import transaction
from storage.errors import RunBusy, StaleWrite, ValidationError
from storage.models import AuditEvent


@pytest.fixture
def run_id(factory):
    with transaction(factory) as s:
        doc = repo.create_document(s, actor="olga", title="Pump 7")
        run = repo.create_run(s, document_id=doc.id, actor="olga", model_id="m", model_checksum="c", seed=1,
                              sampler_settings={"steps": 4})
        return run.id


def test_a_write_names_the_version_it_read(factory, run_id):
    with transaction(factory) as s:
        assert repo.save_run_state(s, run_id, {"held": [[1, 5]]}, expected_version=None) == 1
    with transaction(factory) as s:
        assert repo.save_run_state(s, run_id, {"held": [[1, 5], [2, 6]]}, expected_version=1) == 2
    with pytest.raises(StaleWrite, match="run"), transaction(factory) as s:  # a second writer that read version 1
        repo.save_run_state(s, run_id, {"held": []}, expected_version=1)
    with pytest.raises(StaleWrite), transaction(factory) as s:  # creating it twice
        repo.save_run_state(s, run_id, {"held": []}, expected_version=None)
    with factory() as s:
        got = repo.get_run_state(s, run_id)
        assert (got.version, got.state) == (2, {"held": [[1, 5], [2, 6]]})
        assert repo.run_state_version(s, run_id) == 2
    with pytest.raises(ValidationError), transaction(factory) as s:
        repo.save_run_state(s, run_id, {"x": float("nan")}, expected_version=2)


def test_a_lease_holds_until_it_runs_out(factory, run_id):
    with transaction(factory) as s:
        repo.save_run_state(s, run_id, {}, expected_version=None, owner="A", lease_s=0.5)
    with pytest.raises(RunBusy, match="another app process"), transaction(factory) as s:
        repo.claim_lease(s, run_id, "B", 5)
    with pytest.raises(StaleWrite), transaction(factory) as s:  # nor may B write the state as its owner
        repo.save_run_state(s, run_id, {}, expected_version=1, owner="B", lease_s=5)
    with transaction(factory) as s:
        assert repo.renew_leases(s, "A", [run_id], 0.5) == 1 and repo.renew_leases(s, "B", [run_id], 5) == 0
        assert repo.holds_lease(s, run_id, "A") and not repo.holds_lease(s, run_id, "B")
    time.sleep(0.7)
    with transaction(factory) as s:
        repo.claim_lease(s, run_id, "B", 5)  # A's lease ran out
        assert repo.holds_lease(s, run_id, "B")
        repo.release_lease(s, run_id, "A")  # not A's any more: nothing happens
        assert repo.holds_lease(s, run_id, "B")
        repo.release_lease(s, run_id, "B")
        assert repo.get_run_state(s, run_id).owner is None


def test_runs_running_without_a_live_lease_are_paused_by_the_system(factory, run_id):
    with transaction(factory) as s:
        doc = repo.create_document(s, actor="olga", title="Pump 8")
        live = repo.create_run(s, document_id=doc.id, actor="olga", model_id="m", model_checksum="c", seed=1,
                               sampler_settings={}).id
        repo.save_run_state(s, live, {}, expected_version=None, owner="A", lease_s=60)
        repo.save_run_state(s, run_id, {}, expected_version=None, owner="B", lease_s=0.2)
    time.sleep(0.4)
    with transaction(factory) as s:
        assert repo.pause_interrupted(s) == [run_id]
        assert repo.pause_interrupted(s) == []  # done once
    with factory() as s:
        assert repo.get_run(s, run_id).status == "paused" and repo.get_run(s, live).status == "running"
        ev = s.scalars(select(AuditEvent).where(AuditEvent.action == "run.paused")).one()
        assert (ev.actor, ev.object_id) == ("system", str(run_id)) and "interrupted" in ev.reason


def test_a_step_keeps_why_each_position_was_held(factory, run_id):
    with transaction(factory) as s:
        repo.record_step(s, run_id, 0, [1, 2, 3], [0.1, 0.2, 0.3], kinds=["template", "", "edit"], layout=2)
        with pytest.raises(ValidationError, match="kinds"):
            repo.record_step(s, run_id, 1, [1, 2, 3], [0.1, 0.2, 0.3], kinds=["pin"], layout=2)
        with pytest.raises(ValidationError, match="unknown kind"):
            repo.record_step(s, run_id, 1, [1], [0.1], kinds=["nonsense"])
    with factory() as s:
        (step,) = repo.list_steps(s, run_id)
        assert (step.kinds, step.layout) == (["template", "", "edit"], 2)
