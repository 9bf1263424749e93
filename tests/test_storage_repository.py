"""repository: templates, documents with optimistic locking, runs and steps (compact,
branchable), pins, edits, QA feedback. Users are in test_storage_accounts.py, reviews in
test_storage_reviews.py. SQLite and PostgreSQL. The `draft` fixture is in conftest.py."""

from __future__ import annotations

import json
import struct
import threading
from datetime import timedelta

import numpy as np
import pytest
from sqlalchemy import select

import storage_fixtures as sf
from storage import repository as repo
from storage.audit import verify_chain
from storage.db import transaction
from storage.errors import NotFound, PermissionDenied, StaleWrite, ValidationError
from storage.models import AuditEvent, Edit, Pin, Step, utcnow


APPROVED = "approved as reviewed and correct"


def _n_events(factory) -> int:
    return sf.count_rows(factory, AuditEvent)


def _rows(factory, table) -> int:
    return sf.count_rows(factory, table)


# ---------------------------------------------------------------- documents and optimistic locking


def test_stale_write_is_refused_and_the_first_change_is_kept(factory, draft):
    doc_id = draft["document"]
    with sf.reader(factory)() as s:
        seen_by_alice = seen_by_bob = repo.get_document(s, doc_id).version  # both open version 1
    with transaction(factory) as s:
        repo.update_document(s, doc_id, actor="alice", expected_version=seen_by_alice, text="Alice's text.",
                             reason="fixed the finding")
    events_before = _n_events(factory)
    with pytest.raises(StaleWrite) as info, transaction(factory) as s:
        repo.update_document(s, doc_id, actor="bob", expected_version=seen_by_bob, text="Bob's text.")
    err = info.value
    assert err.who == "alice" and err.when is not None and utcnow() - err.when < timedelta(minutes=1)
    assert "changed by alice at" in str(err) and "not saved" in str(err)
    with pytest.raises(StaleWrite, match="changed by alice"), transaction(factory) as s:
        repo.record_review(s, document_id=doc_id, actor="bob", decision="approve", expected_version=seen_by_bob,
                           signature_meaning=APPROVED)
    with sf.reader(factory)() as s:
        doc = repo.get_document(s, doc_id)
        assert doc.text == "Alice's text." and doc.version == seen_by_alice + 1 and doc.status == "draft"
        assert repo.list_reviews(s, doc_id) == []
    assert _n_events(factory) == events_before
    with transaction(factory) as s:  # reloading and saving again works
        repo.update_document(s, doc_id, actor="bob", expected_version=doc.version, text="Bob's text.")


def test_racing_reviewers_one_wins_one_is_told(factory, draft):
    doc_id, barrier = draft["document"], threading.Barrier(2)
    outcome: dict[str, object] = {}

    def save(name: str) -> None:
        barrier.wait()
        try:
            with transaction(factory) as s:
                repo.update_document(s, doc_id, actor=name, expected_version=1, text=f"{name} wrote this")
            outcome[name] = "saved"
        except StaleWrite as e:
            outcome[name] = e

    threads = [threading.Thread(target=save, args=(n,)) for n in ("alice", "bob")]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    winners = [n for n, o in outcome.items() if o == "saved"]
    assert len(winners) == 1, outcome
    loser = "bob" if winners == ["alice"] else "alice"
    assert isinstance(outcome[loser], StaleWrite) and outcome[loser].who == winners[0]
    with sf.reader(factory)() as s:
        doc = repo.get_document(s, doc_id)
        assert (doc.text, doc.version) == (f"{winners[0]} wrote this", 2)


def test_document_queries_and_status_rules(factory, draft):
    doc_id = draft["document"]
    with transaction(factory) as s:
        with pytest.raises(ValidationError, match="through a review"):
            repo.update_document(s, doc_id, actor="olga", expected_version=1, status="approved")
        repo.update_document(s, doc_id, actor="olga", expected_version=1, status="awaiting_review")
    with sf.reader(factory)() as s:
        assert [d.id for d in repo.documents_awaiting_review(s)] == [doc_id]
        assert [d.id for d in repo.list_documents(s, status="awaiting_review")] == [doc_id]
        with pytest.raises(ValidationError, match="unknown status"):
            repo.list_documents(s, status="lost")
        with pytest.raises(NotFound, match="no document 999"):
            repo.get_document(s, 999)
    with pytest.raises(ValidationError, match="template body is empty"), transaction(factory) as s:
        repo.create_template(s, actor="maya", name="blank", body="  \n")
    with pytest.raises(ValidationError, match="already exists"), transaction(factory) as s:
        repo.create_template(s, actor="maya", name="inspection", body="again")
    with pytest.raises(ValidationError, match="title is 201"), transaction(factory) as s:
        repo.create_document(s, actor="olga", title="t" * 201)


# ---------------------------------------------------------------- runs and steps


def test_steps_are_compact_and_round_trip(factory, draft):
    ids = np.array([0, 1, 2**31 - 1, 7, 50_000], dtype=np.int64)
    conf = np.array([0.0, 0.5, 1.0, 0.333, 0.9999], dtype=np.float32)
    with transaction(factory) as s:
        run = repo.create_run(s, document_id=draft["document"], actor="olga", model_id="m", model_checksum="c",
                              seed=2**40, sampler_settings={"steps": 1})
        step = repo.record_step(s, run.id, 0, ids, conf, t=0.5)
        assert len(step.token_ids) == 4 * 5 and len(step.confidences) == 2 * 5  # int32 + float16
        assert step.token_ids == struct.pack("<5i", *ids.tolist())
    with sf.reader(factory)() as s:
        data = repo.get_step(s, run.id, 0)
        assert data.token_ids == ids.tolist() and data.n_tokens == 5 and data.t == 0.5
        np.testing.assert_allclose(data.confidences, conf, atol=5e-4)
        assert repo.get_run(s, run.id).seed == 2**40
        assert repo.get_run(s, run.id).sampler_settings == {"steps": 1}


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)  # pure input checks: PostgreSQL adds nothing
@pytest.mark.parametrize(
    "index, ids, conf, words",
    [
        (5, [1, 2], [0.1, 0.2], "out of order: the next step is 3"),
        (3, [1, 2], [0.1], "must match"),
        (3, [1, 2**31], [0.1, 0.2], "int32"),
        (3, [1, 2], [0.1, 1.5], "between 0 and 1"),
        (3, [1, 2], [0.1, float("nan")], "between 0 and 1"),
    ],
)
def test_bad_steps_are_refused(factory, draft, index, ids, conf, words):
    before = _rows(factory, Step)
    with pytest.raises(ValidationError, match=words), transaction(factory) as s:
        repo.record_step(s, draft["run"], index, ids, conf)
    assert _rows(factory, Step) == before


def test_branch_resumes_from_any_step_and_keeps_the_old_one(factory, draft):
    doc_id, run_id = draft["document"], draft["run"]
    with transaction(factory) as s:
        repo.add_pin(s, document_id=doc_id, actor="alice", run_id=run_id, step_index=0, span_start=0, span_end=1,
                     text="early")
    with transaction(factory) as s:
        branch = repo.create_run(s, document_id=doc_id, actor="alice", model_id="sfdlm-tiny", model_checksum="x",
                                 seed=8, sampler_settings={"steps": 3}, parent_run_id=run_id, parent_step_index=1)
        with pytest.raises(ValidationError, match="next step is 2"):
            repo.record_step(s, branch.id, 0, [1], [0.5])
        repo.record_step(s, branch.id, 2, [9] * 12, [1.0] * 12)
        twig = repo.create_run(s, document_id=doc_id, actor="alice", model_id="sfdlm-tiny", model_checksum="x",
                               seed=9, sampler_settings={}, parent_run_id=branch.id, parent_step_index=2)
        repo.record_step(s, twig.id, 3, [5] * 12, [1.0] * 12)
    with transaction(factory) as s:
        repo.add_pin(s, document_id=doc_id, actor="alice", run_id=run_id, step_index=2, span_start=1, span_end=2,
                     text="after the branch point")
        repo.add_pin(s, document_id=doc_id, actor="alice", run_id=twig.id, step_index=3, span_start=2, span_end=3,
                     text="own")
    with sf.reader(factory)() as s:
        assert [p.text for p in repo.active_pins(s, run_id=twig.id)] == ["early", "own"]
        assert [p.text for p in repo.active_pins(s, run_id=run_id)] == ["early", "after the branch point"]
        assert [(d.step_index, d.token_ids[0]) for d in repo.list_steps(s, twig.id)] == [
            (0, 100), (1, 101), (2, 9), (3, 5)]
        assert [d.token_ids[0] for d in repo.list_steps(s, run_id)] == [100, 101, 102]  # old branch kept
        assert repo.get_step(s, branch.id, 1).token_ids[0] == 101
        assert repo.last_step(s, branch.id).step_index == 2
        with pytest.raises(NotFound, match="no step 7"):
            repo.get_step(s, run_id, 7)
    with pytest.raises(NotFound, match="has no step 9"), transaction(factory) as s:
        repo.create_run(s, document_id=doc_id, actor="alice", model_id="m", model_checksum="c", seed=1,
                        sampler_settings={}, parent_run_id=run_id, parent_step_index=9)
    with transaction(factory) as s:
        other = repo.create_document(s, actor="olga", title="other")
        with pytest.raises(ValidationError, match="belongs to document"):
            repo.create_run(s, document_id=other.id, actor="alice", model_id="m", model_checksum="c", seed=1,
                            sampler_settings={}, parent_run_id=run_id, parent_step_index=1)
        repo.set_run_status(s, run_id, actor="olga", status="finished")
        with pytest.raises(ValidationError, match="finished"):
            repo.record_step(s, run_id, 3, [1], [0.5])


# ---------------------------------------------------------------- pins and edits


def _branch(s, doc_id, parent, step, n_tokens=12, first_token=50):
    run = repo.create_run(s, document_id=doc_id, actor="alice", model_id="sfdlm-tiny", model_checksum="x", seed=1,
                          sampler_settings={}, parent_run_id=parent, parent_step_index=step)
    repo.record_step(s, run.id, step + 1, [first_token] * n_tokens, [0.5] * n_tokens)
    return run.id


def _pin(s, doc_id, run_id, step, start, text, end=None):
    return repo.add_pin(s, document_id=doc_id, actor="alice", run_id=run_id, step_index=step, span_start=start,
                        span_end=start + 1 if end is None else end, text=text).id


def _held(factory, run_id, **kw):
    with sf.reader(factory)() as s:
        return [(p.text, p.span_start, p.span_end) for p in repo.active_pins(s, run_id=run_id, **kw)]


def test_a_branch_keeps_the_pins_in_effect_at_its_branch_point(factory, draft):
    doc_id, run_id = draft["document"], draft["run"]
    with transaction(factory) as s:
        _pin(s, doc_id, run_id, 0, 0, "kept")
        gone_early = _pin(s, doc_id, run_id, 0, 1, "unpinned at step 1")
        gone_late = _pin(s, doc_id, run_id, 1, 2, "unpinned at step 2")
        removed_after = _pin(s, doc_id, run_id, 1, 3, "unpinned after the branch")
        _pin(s, doc_id, run_id, 2, 4, "pinned at step 2")
        repo.remove_pin(s, gone_early, actor="alice", step_index=1)
        repo.remove_pin(s, gone_late, actor="alice")  # at the run's latest step, 2
    with transaction(factory) as s:
        branch = _branch(s, doc_id, run_id, 1)
    with transaction(factory) as s:  # the parent changes after the branch was made
        repo.remove_pin(s, removed_after, actor="bob", step_index=1, reason="not needed after all")
        _pin(s, doc_id, run_id, 0, 5, "pinned after the branch")
        _pin(s, doc_id, branch, 2, 6, "own")
    assert _held(factory, run_id) == [("kept", 0, 1), ("pinned at step 2", 4, 5), ("pinned after the branch", 5, 6)]
    assert _held(factory, branch) == [("kept", 0, 1), ("unpinned at step 2", 2, 3),
                                      ("unpinned after the branch", 3, 4), ("own", 6, 7)]
    with transaction(factory) as s:  # a branch of the branch, and one from a step the branch inherited
        twig = _branch(s, doc_id, branch, 2)
        sprout = _branch(s, doc_id, branch, 0, first_token=60)
    assert _held(factory, twig) == _held(factory, branch)
    assert _held(factory, sprout) == [("kept", 0, 1), ("unpinned at step 1", 1, 2)]  # it held at step 0
    with sf.reader(factory)() as s:
        assert [(d.step_index, d.token_ids[0]) for d in repo.list_steps(s, sprout)] == [(0, 100), (1, 60)]
    with transaction(factory) as s:  # unpinning an inherited pin in the branch leaves the parent's alone
        repo.remove_pin(s, removed_after, actor="alice", run_id=twig, reason="only here")
        repo.remove_pin(s, gone_late, actor="alice", run_id=branch)
        with pytest.raises(ValidationError, match="already removed"):
            repo.remove_pin(s, removed_after, actor="alice", run_id=twig)
    assert [t for t, _, _ in _held(factory, twig)] == ["kept", "unpinned at step 2", "own"]  # made before
    assert [t for t, _, _ in _held(factory, branch)] == ["kept", "unpinned after the branch", "own"]
    with sf.reader(factory)() as s:
        parent_rows = {p.id: p for p in s.scalars(select(Pin).where(Pin.run_id == run_id))}
        assert parent_rows[gone_late].removed_step_index == 2 and parent_rows[removed_after].removed_by_id is not None
        assert verify_chain(s).ok


def test_edits_move_the_pins_after_them(factory, draft):
    doc_id, run_id = draft["document"], draft["run"]
    with transaction(factory) as s:
        _pin(s, doc_id, run_id, 1, 10, "from step 1")
        _pin(s, doc_id, run_id, 2, 2, "pump", end=4)
        _pin(s, doc_id, run_id, 2, 8, "oil")
        moved_id = _pin(s, doc_id, run_id, 2, 6, "leaks", end=8)
        before_point = _branch(s, doc_id, run_id, 1)  # made before the edit, from step 1
    with transaction(factory) as s:  # 2 tokens become 3: everything from 6 on moves by one
        edit = repo.record_run_edit(s, document_id=doc_id, actor="bob", run_id=run_id, step_index=2, span_start=4,
                                    span_end=6, old_text="hydraulic", new_text="high pressure", new_n_tokens=3,
                                    reason="more precise")
        edit_id = edit.id
    assert _held(factory, run_id) == [("pump", 2, 4), ("leaks", 7, 9), ("oil", 9, 10), ("from step 1", 11, 12)]
    assert ("high pressure", 4, 7) in _held(factory, run_id, include_edits=True)
    with sf.reader(factory)() as s:
        ev = s.scalars(select(AuditEvent).where(AuditEvent.action == "pin.move")).one()
        moved = json.loads(ev.new_value)
        assert moved["shift"] == 1 and len(moved["pins"]) == 3 and ev.object_id == str(edit_id)
        assert {p["replaces"] for p in moved["pins"]} >= {moved_id}
        assert s.get(Pin, moved_id).span_start == 6  # the old row keeps its positions
        assert s.get(Edit, edit_id).new_n_tokens == 3
    # the stored positions now agree with the draft: the overlap check uses them
    for start, end in ((7, 8), (9, 9 + 1), (3, 5)):
        with pytest.raises(ValidationError, match="overlaps pinned tokens"), transaction(factory) as s:
            repo.record_run_edit(s, document_id=doc_id, actor="bob", run_id=run_id, step_index=2, span_start=start,
                                 span_end=end, old_text="x", new_text="y", new_n_tokens=1, reason="r")
    with transaction(factory) as s:  # position 6 is in the edit's own span: it may be edited again, 12 exists now
        repo.record_run_edit(s, document_id=doc_id, actor="bob", run_id=run_id, step_index=2, span_start=6,
                             span_end=7, old_text=" pressure", new_text="", reason="shorter")
        _pin(s, doc_id, run_id, 2, 11, "last")
    assert _held(factory, run_id, include_edits=True) == [
        ("pump", 2, 4), ("high pressure", 4, 6), ("leaks", 6, 8), ("oil", 8, 9), ("from step 1", 10, 11),
        ("last", 11, 12)]
    # a branch made before the edit, and one made from before its step, keep the old positions; one
    # made from the edited step gets the new ones
    assert _held(factory, before_point) == [("from step 1", 10, 11)]
    with transaction(factory) as s:
        later_from_1 = _branch(s, doc_id, run_id, 1)
        from_2 = _branch(s, doc_id, run_id, 2, n_tokens=12)
    assert _held(factory, later_from_1) == [("from step 1", 10, 11)]
    assert _held(factory, from_2) == _held(factory, run_id)
    # an edit in the branch moves its inherited pins for the branch only
    with transaction(factory) as s:
        repo.record_run_edit(s, document_id=doc_id, actor="bob", run_id=from_2, step_index=3, span_start=0,
                             span_end=0, old_text="", new_text="Note: ", new_n_tokens=2, reason="prefix")
    assert _held(factory, from_2) == [("pump", 4, 6), ("leaks", 8, 10), ("oil", 10, 11), ("from step 1", 12, 13),
                                      ("last", 13, 14)]
    assert [t for t, _, _ in _held(factory, run_id)] == ["pump", "leaks", "oil", "from step 1", "last"]
    assert _held(factory, run_id)[0] == ("pump", 2, 4)
    with transaction(factory) as s:  # unpinning by the id the person saw unpins the moved row
        repo.remove_pin(s, moved_id, actor="alice", run_id=from_2, reason="free it")
        repo.remove_pin(s, moved_id, actor="alice", reason="free it here too")
    assert "leaks" not in [t for t, _, _ in _held(factory, from_2)]
    assert "leaks" not in [t for t, _, _ in _held(factory, run_id)]
    with sf.reader(factory)() as s:
        doc_pins = repo.active_pins(s, document_id=doc_id)
        assert sorted(p.text for p in doc_pins if p.run_id == run_id) == ["from step 1", "last", "oil", "pump"]
        # QA feedback counts what people pinned, not the rows edits made or moved
        assert {r.key: r.pins for r in repo.feedback_counts(s, "term")}["leaks"] == 1
        assert verify_chain(s).ok


def test_pins_edits_and_their_audit(factory, draft):
    doc_id, run_id = draft["document"], draft["run"]
    with transaction(factory) as s:
        pin = repo.add_pin(s, document_id=doc_id, actor="alice", run_id=run_id, step_index=2, span_start=2,
                           span_end=4, text="hydraulic pump", reason="the part name is fixed")
        term = repo.add_term_pins(s, document_id=doc_id, actor="alice", run_id=run_id, step_index=2, term="oil",
                                  spans=[(6, 7), (9, 10)])
        edit = repo.record_run_edit(s, document_id=doc_id, actor="bob", run_id=run_id, step_index=2, span_start=4,
                                    span_end=6, old_text="leaks", new_text="drips", reason="more precise")
    with sf.reader(factory)() as s:
        assert [p.span_start for p in repo.active_pins(s, run_id=run_id)] == [2, 6, 9]
        assert {p.kind for p in term} == {"term"} and pin.kind == "token"
        ev = s.scalars(select(AuditEvent).where(AuditEvent.action == "edit")).one()
        assert (ev.actor, ev.role, ev.reason, ev.document_id) == ("bob", "reviewer", "more precise", doc_id)
        assert '"drips"' in ev.new_value and '"leaks"' in ev.old_value and '"step_index":2' in ev.settings
        assert repo.list_edits(s, run_id=run_id)[0].id == edit.id
    with transaction(factory) as s:
        repo.remove_pin(s, pin.id, actor="alice", reason="not needed")
        with pytest.raises(ValidationError, match="already removed"):
            repo.remove_pin(s, pin.id, actor="alice")
    with sf.reader(factory)() as s:
        assert [p.span_start for p in repo.active_pins(s, run_id=run_id)] == [6, 9]


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)  # pure input checks: PostgreSQL adds nothing
@pytest.mark.parametrize(
    "change, words",
    [
        (dict(span_start=10, span_end=13), r"\[10, 13\) lies outside the document \(valid positions are 0 to 12\)"),
        (dict(span_start=-1, span_end=2), "lies outside"),
        (dict(span_start=5, span_end=4), "empty or reversed"),
        (dict(span_start=1, span_end=3), r"overlaps pinned tokens \[2, 4\)"),
        (dict(span_start=3, span_end=3), "overlaps pinned tokens"),
        (dict(reason=""), "reason is empty"),
        (dict(reason=None), "reason is required"),
        (dict(reason="x" * 2001), "at most 2000"),
        (dict(new_text="y" * 20_001), "new text is 20001 characters"),
        (dict(new_text="old"), "same as the old text"),
        (dict(step_index=9), "has no step 9"),
        (dict(actor="olga"), "may not edit"),
        (dict(actor="ghost"), "unknown user"),
    ],
)
def test_bad_token_edits_leave_no_rows(factory, draft, change, words):
    with transaction(factory) as s:
        repo.add_pin(s, document_id=draft["document"], actor="alice", run_id=draft["run"], step_index=2,
                     span_start=2, span_end=4, text="pump")
    before = (_rows(factory, Edit), _n_events(factory))
    args = dict(document_id=draft["document"], actor="bob", run_id=draft["run"], step_index=2, span_start=5,
                span_end=6, old_text="old", new_text="new", reason="why")
    args.update(change)
    with pytest.raises((ValidationError, NotFound, PermissionDenied), match=words), transaction(factory) as s:
        repo.record_run_edit(s, **args)
    assert (_rows(factory, Edit), _n_events(factory)) == before


def test_pins_outside_the_draft_are_refused(factory, draft):
    before = (_rows(factory, Pin), _n_events(factory))
    for start, end in ((11, 13), (0, 0), (-2, 1)):
        with pytest.raises(ValidationError), transaction(factory) as s:
            repo.add_pin(s, document_id=draft["document"], actor="alice", run_id=draft["run"], step_index=2,
                         span_start=start, span_end=end, text="x")
    with pytest.raises(ValidationError, match="does not occur"), transaction(factory) as s:
        repo.add_term_pins(s, document_id=draft["document"], actor="alice", run_id=draft["run"], step_index=2,
                           term="absent", spans=[])
    with pytest.raises(ValidationError, match="lies outside"), transaction(factory) as s:  # second span bad
        repo.add_term_pins(s, document_id=draft["document"], actor="alice", run_id=draft["run"], step_index=2,
                           term="oil", spans=[(1, 2), (12, 14)])
    assert (_rows(factory, Pin), _n_events(factory)) == before


def test_text_edits_change_the_document_with_a_version_check(factory, draft):
    doc_id = draft["document"]  # text "The pump leaks oil."
    with transaction(factory) as s:
        repo.record_text_edit(s, document_id=doc_id, actor="alice", span_start=4, span_end=8, old_text="pump",
                              new_text="valve", reason="wrong part", expected_version=1)
    with sf.reader(factory)() as s:
        doc = repo.get_document(s, doc_id)
        assert (doc.text, doc.version) == ("The valve leaks oil.", 2)
    bad = [
        (dict(span_start=15, span_end=30, old_text="oil."), ValidationError, "lies outside the document"),
        (dict(span_start=0, span_end=3, old_text="An "), ValidationError, "is 'The', not 'An '"),
        (dict(expected_version=None), ValidationError, "needs the version"),
        (dict(expected_version=1), StaleWrite, "changed by alice"),
    ]
    before = (_rows(factory, Edit), _n_events(factory))
    for change, error, words in bad:
        args = dict(document_id=doc_id, actor="bob", span_start=0, span_end=3, old_text="The", new_text="A",
                    reason="style", expected_version=2)
        args.update(change)
        with pytest.raises(error, match=words), transaction(factory) as s:
            repo.record_text_edit(s, **args)
    assert (_rows(factory, Edit), _n_events(factory)) == before
    with sf.reader(factory)() as s:
        assert repo.get_document(s, doc_id).text == "The valve leaks oil."


# ---------------------------------------------------------------- QA feedback


def test_feedback_per_term_template_model_and_user(factory, draft):
    doc_id, run_id = draft["document"], draft["run"]
    with transaction(factory) as s:
        repo.add_pin(s, document_id=doc_id, actor="alice", run_id=run_id, step_index=2, span_start=0, span_end=2,
                     text="Hydraulic Pump")
        repo.add_term_pins(s, document_id=doc_id, actor="bob", run_id=run_id, step_index=2, term="hydraulic pump",
                           spans=[(4, 6), (8, 10)])
        repo.record_run_edit(s, document_id=doc_id, actor="alice", run_id=run_id, step_index=2, span_start=10,
                             span_end=11, old_text="leak", new_text="drip", reason="precise")
        repo.record_text_edit(s, document_id=doc_id, actor="bob", span_start=4, span_end=8, old_text="pump",
                              new_text="valve", reason="part", expected_version=1)
    with sf.reader(factory)() as s:
        key = lambda rows: {r.key: (r.pins, r.edits) for r in rows}  # noqa: E731
        assert key(repo.feedback_counts(s, "term")) == {"hydraulic pump": (3, 0), "leak": (0, 1), "pump": (0, 1)}
        assert key(repo.feedback_counts(s, "template")) == {"inspection": (3, 2)}
        assert key(repo.feedback_counts(s, "model")) == {"sfdlm-tiny": (3, 1), repo.NO_RUN: (0, 1)}
        assert key(repo.feedback_counts(s, "user")) == {"alice": (1, 1), "bob": (2, 1)}
        assert repo.feedback_counts(s, "user", since=utcnow() + timedelta(hours=1)) == []
        pairs = repo.edit_pairs(s, model_id="sfdlm-tiny")
        assert [(p.old_text, p.new_text, p.user, p.template) for p in pairs] == [("leak", "drip", "alice", "inspection")]
        with pytest.raises(ValidationError, match="unknown grouping"):
            repo.feedback_counts(s, "colour")  # type: ignore[arg-type]
