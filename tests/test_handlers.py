"""The screens' handlers (app.draft, app.review, app.audit, app.admin) as plain functions: the
tiny model, a temporary database, the seeded users (olga operator, alice / bob reviewers, maya
manager, adam admin)."""

from __future__ import annotations

import dataclasses

import pytest
import storage_fixtures as sf
from sqlalchemy import select

from app import admin, audit, auth, draft, review, steering
from app.state import DraftState
from storage import repository as repo
from storage.models import AuditEvent

TEMPLATE = "Shift handover"


def actions(svc) -> list[str]:
    with svc.reader() as s:
        return list(s.scalars(select(AuditEvent.action).order_by(AuditEvent.seq)))


def start(svc, user="alice", steps=8, template=TEMPLATE, length=None, seed=1):
    return draft.generate(svc, user, DraftState(), template=template, length=length, steps=steps, seed=seed,
                      temperature=1.0)


def free_positions(up) -> list[int]:
    return [c["i"] for c in up.payload["cells"] if "m" not in c["k"]]


def tokens(svc, up) -> list[int]:
    return list(svc.runs.get(up.state.run_id).frames[up.step].token_ids)


def run_to_end(gen) -> list:
    return list(gen)


def test_generate_streams_every_step_and_records_it(app_services):
    svc = app_services
    ups = run_to_end(start(svc, steps=6))
    assert [u.step for u in ups] == list(range(7))
    assert all(u.kind != "error" for u in ups) and ups[-1].kind == "ok"
    st = ups[-1].state
    with svc.reader() as s:
        steps = repo.list_steps(s, st.run_id)
        assert [x.step_index for x in steps] == list(range(7))
        assert repo.get_run(s, st.run_id).status == "paused"  # complete, awaiting a decision
    template = [c["i"] for c in ups[0].payload["cells"] if "m" in c["k"]]
    for x in steps:  # the template's fixed text never changes
        assert [x.token_ids[p] for p in template] == [steps[0].token_ids[p] for p in template]
    assert ups[-1].text.startswith("SHIFT HANDOVER")
    assert actions(svc).count("run.start") == 1


def test_free_length_draft_and_bad_settings(app_services):
    ups = run_to_end(start(app_services, template=draft.FREE_LENGTH, length=20, steps=3))
    assert len(ups[-1].payload["cells"]) == 20
    for kw, word in ((dict(steps=0), "steps"), (dict(length=0, template=None), "length"),
                     (dict(template="No such template"), "no template")):
        args = dict(steps=3) | kw
        (up,) = list(start(app_services, **args))
        assert up.kind == "error" and word in up.message


def test_the_steps_field_follows_the_kind_of_draft(app_services):
    """The model's free_steps become the Steps field's value when Free length is chosen, its
    steps when a template is; a number the person typed stays, and the run records what it ran."""
    svc = app_services
    svc.ckpt.sampler_cfg = dataclasses.replace(svc.ckpt.sampler_cfg, steps=4, free_steps=7)
    assert draft.default_steps(svc, draft.FREE_LENGTH, 4) == 7
    assert draft.default_steps(svc, TEMPLATE, 7) == 4
    assert draft.default_steps(svc, draft.FREE_LENGTH, None) == 7
    assert draft.default_steps(svc, TEMPLATE, "") == 4
    assert draft.default_steps(svc, draft.FREE_LENGTH, 12) == 12  # the person's own number
    assert draft.default_steps(svc, draft.FREE_LENGTH, "many") == "many"  # Generate refuses it with its message
    ups = run_to_end(start(svc, template=draft.FREE_LENGTH, length=16,
                           steps=draft.default_steps(svc, draft.FREE_LENGTH, 4)))
    assert ups[-1].kind == "ok" and ups[-1].step == 7
    with svc.reader() as s:
        recorded = repo.get_run(s, ups[-1].state.run_id).sampler_settings
    assert recorded["steps"] == 7 and "free_steps" not in recorded  # one count, the one it ran
    svc.ckpt.sampler_cfg = dataclasses.replace(svc.ckpt.sampler_cfg, free_steps=None)
    assert draft.default_steps(svc, draft.FREE_LENGTH, 4) == 4  # a model without it: one count


def test_pin_and_edit_during_the_run_hold_in_every_later_step(app_services):
    svc = app_services
    gen = start(svc, steps=10)
    ups = [next(gen), next(gen), next(gen)]  # steps 0, 1, 2 are on screen
    st = ups[-1].state
    free = free_positions(ups[-1])
    pinned_pos = free[0]
    r = steering.toggle_pin(svc, "alice", st, pinned_pos)
    assert r.kind == "ok" and "next step" in r.message
    pinned_tok = tokens(svc, ups[-1])[pinned_pos]
    a, b = free[4], free[6]
    r = steering.edit_span(svc, "alice", st, a, b, " hydraulic pump leak", "wrong part")
    assert r.kind == "ok", r.message
    new_ids = svc.tokenizer.encode(" hydraulic pump leak")
    rest = list(gen)
    assert rest[0].step == 3 and rest[-1].step == 10
    with svc.reader() as s:
        later = [x for x in repo.list_steps(s, st.run_id) if x.step_index >= 3]
    for x in later:
        assert x.token_ids[pinned_pos] == pinned_tok
        assert x.token_ids[a:a + len(new_ids)] == new_ids
    assert " hydraulic pump leak" in rest[-1].text
    assert {"pin.add", "edit"} <= set(actions(svc))


def test_refusals_change_nothing(app_services):
    svc = app_services
    gen = start(svc, steps=8)
    up = [next(gen), next(gen)][-1]
    st = up.state
    template_pos = next(c["i"] for c in up.payload["cells"] if "m" in c["k"])
    free = free_positions(up)
    before = len(actions(svc))
    assert "may not pin" in steering.toggle_pin(svc, "olga", st, free[0]).message  # operator: no pin right
    assert "may not" in steering.toggle_pin(svc, "maya", st, free[0]).message
    assert "may not edit" in steering.edit_span(svc, "olga", st, free[0], free[1], "x").message
    assert "outside the draft" in steering.toggle_pin(svc, "alice", st, 10_000).message
    assert "outside the draft" in steering.edit_span(svc, "alice", st, 5, 10_000, "x").message
    assert "template" in steering.toggle_pin(svc, "alice", st, template_pos).message
    assert "overlaps" in steering.edit_span(svc, "alice", st, template_pos, template_pos + 1, "x").message
    assert "not logged in" in steering.toggle_pin(svc, None, st, free[0]).message
    assert "no draft" in steering.toggle_pin(svc, "alice", DraftState(), 0).message
    assert len(actions(svc)) == before  # nothing was written
    assert steering.toggle_pin(svc, "alice", st, free[0]).kind == "ok"
    assert "overlaps" in steering.edit_span(svc, "alice", st, free[0], free[0] + 1, "x").message
    list(gen)


def test_unpin_and_lock_term(app_services):
    svc = app_services
    gen = start(svc, steps=6)
    up = [next(gen), next(gen)][-1]
    st = up.state
    p = free_positions(up)[2]
    assert steering.toggle_pin(svc, "alice", st, p).kind == "ok"
    r = steering.toggle_pin(svc, "alice", st, p)
    assert r.kind == "ok" and "unpinned" in r.message
    ctrl = svc.runs.get(st.run_id)
    piece = svc.tokenizer.decode([int(ctrl.base.tokens[p])])
    r = steering.lock_term(svc, "alice", st, piece)
    assert r.kind == "ok" and "locked" in r.message, r.message
    assert "does not occur" in steering.lock_term(svc, "alice", st, "zzzz qqqq xxxx").message
    assert steering.lock_term(svc, "alice", st, "   ").kind == "error"
    list(gen)
    assert {"pin.add", "pin.remove", "pin.lock_term"} <= set(actions(svc))


def test_pause_resume_and_branch(app_services):
    svc = app_services
    gen = start(svc, steps=8)
    ups = [next(gen), next(gen), next(gen)]
    st = ups[-1].state
    paused = draft.pause(svc, "alice", st)
    assert paused.kind == "info" and paused.message == ""  # the stream itself says "Paused"
    rest = list(gen)
    assert rest[-1].message.startswith("Paused") and rest[-1].step == 2
    p = free_positions(ups[-1])[1]
    assert steering.toggle_pin(svc, "alice", st, p).kind == "ok"
    tok = svc.runs.get(st.run_id).base.tokens[p].item()
    done = list(draft.resume(svc, "alice", st))
    assert done[-1].step == 8 and done[0].step == 3
    with svc.reader() as s:
        steps = repo.list_steps(s, st.run_id)
    assert [x.step_index for x in steps] == list(range(9))
    assert all(x.token_ids[p] == tok for x in steps[3:])
    assert "complete" in list(draft.resume(svc, "alice", st))[0].message
    # back to step 4, change pins, continue as a branch; the first run is kept
    r = draft.view_step(svc, "alice", st, 4)
    assert r.step == 4 and "branch" in r.message
    q = free_positions(ups[-1])[5]
    assert steering.toggle_pin(svc, "alice", st, q).kind == "ok"
    branch = list(draft.resume(svc, "alice", st))
    new_state = branch[-1].state
    assert new_state.run_id != st.run_id and branch[0].step == 5 and branch[-1].step == 8
    with svc.reader() as s:
        run = repo.get_run(s, new_state.run_id)
        assert (run.parent_run_id, run.parent_step_index) == (st.run_id, 4)
        assert len(repo.list_steps(s, st.run_id)) == 9  # old branch intact
        b_steps = repo.list_steps(s, new_state.run_id)
    assert [x.step_index for x in b_steps] == list(range(9))
    assert len({x.token_ids[q] for x in b_steps[4:]}) == 1
    r = draft.open_run(svc, "alice", new_state, st.run_id)
    assert r.kind == "info" and r.state.run_id == st.run_id and r.step == 8
    assert len(r.runs) == 2


def test_a_suspended_stream_holds_no_lock_and_may_resume_on_another_thread(app_services):
    """Gradio iterates a handler's generator on worker threads, one next() at a time, not always
    on the same thread: while the stream waits at a yield (a step, "Paused", "already being
    generated") the run's lock is free for the pin / edit handlers, and another thread can carry
    the generator on to its end without an error."""
    import threading

    svc = app_services
    gen = start(svc, steps=8)
    ups = [next(gen), next(gen)]
    st = ups[-1].state
    ctrl = svc.runs.get(st.run_id)

    def lock_is_free() -> bool:
        got = []
        t = threading.Thread(target=lambda: got.append(ctrl.lock.acquire(timeout=2) and (ctrl.lock.release() or True)))
        t.start()
        t.join()
        return got == [True]

    assert lock_is_free()  # at a step
    second = draft.resume(svc, "alice", st)
    busy = next(second)
    assert busy.kind == "error" and "already being generated" in busy.message and lock_is_free()
    assert list(second) == []
    assert draft.pause(svc, "alice", st).kind == "info"
    paused = next(gen)
    assert paused.message.startswith("Paused") and lock_is_free()
    rest: list = []
    t = threading.Thread(target=lambda: rest.extend(gen))
    t.start()
    t.join(timeout=30)
    assert not t.is_alive() and rest == []  # the stream ends after "Paused", on this other thread
    assert not ctrl.streaming and steering.toggle_pin(svc, "alice", st, free_positions(ups[-1])[0]).kind == "ok"


def test_reopen_from_the_database_after_restart(app_services):
    svc = app_services
    ups = run_to_end(start(svc, steps=4))
    st = ups[-1].state
    svc.runs._runs.clear()  # as after a restart
    r = draft.view_step(svc, "alice", st, 2)
    assert r.step == 2 and r.payload["cells"]


def test_accept_review_sign_and_audit(app_services):
    svc = app_services
    ups = run_to_end(start(svc, user="olga", steps=4))
    st = ups[-1].state
    assert "reason" in draft.reject(svc, "olga", st, "  ").message
    r = draft.accept(svc, "olga", st)
    assert r.kind == "ok", r.message
    assert "cannot be accepted again" in draft.accept(svc, "olga", st).message
    path, msg = draft.download(svc, "olga", st, "md")
    text = open(path, encoding="utf-8").read()
    assert text.startswith("# ") and "SHIFT HANDOVER" in text and path.startswith(str(svc.temp_dir))
    assert draft.download(svc, "maya", st, "md")[0] is None
    assert review.review_queue(svc, "olga").kind == "error"
    q = review.review_queue(svc, "alice")
    assert [row[0] for row in q.queue] == [st.document_id]
    opened = review.open_review(svc, "alice", st.document_id)
    assert "SHIFT HANDOVER" in opened.document_html and "document.update" in opened.history_html
    bad = review.sign_review(svc, "alice", opened.state, "approve", "", "wrong password")
    assert bad.kind == "error" and "password" in bad.message
    assert "say why" in review.sign_review(svc, "alice", opened.state, "reject", "", sf.PASSWORD).message
    ok = review.sign_review(svc, "alice", opened.state, "approve", "complete and correct", sf.PASSWORD)
    assert ok.kind == "ok" and ok.queue == []
    with svc.reader() as s:
        row = repo.list_reviews(s, st.document_id)[0]
        assert (row.decision, row.reason, row.signature_meaning, row.signed_by, row.signature_method) == (
            "approve", "complete and correct", review.SIGNATURE_MEANINGS["approve"], "alice", "password re-entry")
        assert repo.get_document(s, st.document_id).status == "approved"
    again = review.sign_review(svc, "bob", opened.state, "reject", "late", sf.PASSWORD)
    assert again.kind == "error" and "changed by alice" in again.message  # the second reviewer is told
    acts = actions(svc)
    for a in ("run.start", "document.update", "run.finished", "review.approve", "signature.failed"):
        assert a in acts


def test_review_screen_refuses_own_drafts_and_drafts_not_accepted(app_services):
    svc = app_services
    own = run_to_end(start(svc, user="alice", steps=3))[-1].state
    pending = run_to_end(start(svc, user="olga", steps=3, seed=2))[-1].state  # complete, never accepted
    assert draft.accept(svc, "alice", own).kind == "ok"
    for doc_id, words in ((own.document_id, f"alice may not review document {own.document_id}: they created it"),
                          (pending.document_id, f"document {pending.document_id} is a draft: its author must accept")):
        opened = review.open_review(svc, "alice", doc_id)
        refused = review.sign_review(svc, "alice", opened.state, "approve", "", sf.PASSWORD)
        assert refused.kind == "error" and words in refused.message and "Traceback" not in refused.message
    assert actions(svc).count("review.refused") == 2
    with svc.reader() as s:
        assert repo.list_reviews(s, own.document_id) == [] and repo.list_reviews(s, pending.document_id) == []
    opened = review.open_review(svc, "bob", own.document_id)
    assert review.sign_review(svc, "bob", opened.state, "approve", "", sf.PASSWORD).kind == "ok"


def test_audit_screen_is_for_managers(app_services, tmp_path):
    from storage.export import read_frame

    svc = app_services
    run_to_end(start(svc, steps=3))
    assert audit.audit_table(svc, "alice", audit.AuditQuery()).kind == "error"
    t = audit.audit_table(svc, "maya", audit.AuditQuery(action="run.start"))
    assert t.rows and all(r[4] == "run.start" for r in t.rows)
    assert audit.audit_table(svc, "maya", audit.AuditQuery(since="not a date")).kind == "error"
    assert audit.audit_table(svc, "maya", audit.AuditQuery(user="alice", since="2000-01-01", until="2999-01-01")).rows
    for fmt in audit.FORMATS:
        up = audit.export_audit(svc, "maya", audit.AuditQuery(), fmt)
        assert up.kind == "ok", up.message
        df = read_frame(up.file, fmt)
        assert len(df) >= 5 and "run.start" in set(df["action"])
    refused = audit.export_audit(svc, "alice", audit.AuditQuery(), "csv")
    assert refused.kind == "error" and refused.file is None and "may not export" in refused.message
    assert audit.verify_trail(svc, "maya").message.startswith("✔")
    assert audit.verify_trail(svc, "olga").kind == "error"
    charts = audit.feedback_charts(svc, "maya").charts
    assert set(charts) == {"per_day", "per_template", "per_term", "pin_rate"} and len(charts["per_day"]) == 1
    assert "export" in actions(svc)


def test_admin_manages_users(app_services):
    svc = app_services
    assert admin.list_users(svc, "maya").kind == "error"
    assert len(admin.list_users(svc, "adam").rows) == len(sf.USERS)
    assert admin.add_user(svc, "adam", "nina", "operator", "short").kind == "error"
    assert admin.add_user(svc, "adam", "nina", "operator", "long enough password").kind == "ok"
    assert admin.change_role(svc, "adam", "nina", "reviewer", "promoted").kind == "ok"
    assert admin.set_enabled(svc, "adam", "nina", False, "left").kind == "ok"
    assert "disabled" in steering.toggle_pin(svc, "nina", DraftState(run_id=1), 0).message
    assert admin.add_user(svc, "alice", "eve", "admin", "long enough password").kind == "error"


def test_unexpected_errors_become_a_short_message(app_services, monkeypatch, caplog):
    svc = app_services

    def boom(*a, **k):
        raise RuntimeError("secret internals")

    monkeypatch.setattr(repo, "record_step", boom)
    ups = list(start(svc, steps=3))
    assert ups[-1].kind == "error" and "reference" in ups[-1].message
    assert "secret" not in ups[-1].message and "Traceback" not in ups[-1].message
    assert "secret internals" in caplog.text


def test_login_counts_and_slows_failures(app_services):
    import dataclasses
    import time

    svc = app_services
    svc.login_policy = dataclasses.replace(svc.login_policy, base_delay_s=0.2)
    assert auth.login(svc, "alice", "nope nope") is None
    t0 = time.monotonic()
    assert auth.login(svc, "alice", "nope again") is None  # waits 0.2 s after the first failure
    assert time.monotonic() - t0 >= 0.15
    assert auth.login(svc, "ghost", "whatever1") is None
    actor = auth.login(svc, "alice", sf.PASSWORD)
    assert actor == auth.Actor("alice", "reviewer")
    acts = actions(svc)
    assert acts.count("login.failed") == 3 and acts.count("login") == 1
    with svc.reader() as s:
        assert repo.get_user(s, "alice").failed_logins == 0


def test_span_text_is_the_text_of_the_selected_tokens(app_services):
    svc = app_services
    ups = run_to_end(start(svc, steps=3))
    st = ups[-1].state
    ids = tokens(svc, ups[-1])
    assert steering.span_text(svc, st, 2, 5) == (2, 5, svc.tokenizer.decode(ids[2:5]))
    for a, b in ((5, 5), (3, 2), (-1, 2), (0, 10_000), (None, 2), ("1", 2)):
        assert steering.span_text(svc, st, a, b) == (0, 0, "")
    assert steering.span_text(svc, DraftState(), 0, 1) == (0, 0, "")
