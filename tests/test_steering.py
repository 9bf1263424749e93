"""Steering as a person meets it (app.steering, app.draft): a click names the token that was seen,
a complete draft can be changed and refined, lock term ignores case, bad input is refused with
its limit, the stream's status and an act's result go to separate lines, the pace holds."""

from __future__ import annotations

import time

import pytest
from sqlalchemy import select

from app import draft, steering
from app.state import DraftState
from app.ui_draft import draft_outputs
from storage import repository as repo
from storage.models import AuditEvent, Document

TEMPLATE = "Shift handover"


def start(svc, steps=8, template=TEMPLATE, length=None, seed=1, **kw):
    return draft.generate(svc, "alice", DraftState(), template=template, length=length, steps=steps, seed=seed,
                          temperature=1.0, **kw)


def free(up) -> list[int]:
    return [c["i"] for c in up.payload["cells"] if not c["k"].replace("c", "").replace("s", "")]


def test_a_click_on_an_older_step_pins_the_token_that_was_seen(app_services):
    svc = app_services
    gen = start(svc, steps=12)
    seen = [next(gen) for _ in range(3)]  # the person looks at step 2
    later = [next(gen) for _ in range(4)]  # the stream has moved on to step 6 when the click lands
    st = seen[-1].state
    ctrl = svc.runs.get(st.run_id)
    # a free position whose token changed between the step seen and now
    pos = next(p for p in free(seen[-1]) if ctrl.frames[2].token_ids[p] != ctrl.base.tokens[p].item())
    want = ctrl.frames[2].token_ids[pos]
    up = steering.toggle_pin(svc, "alice", st, pos, seen[-1].payload["step"], seen[-1].payload["layout"])
    assert up.kind == "ok", up.message
    assert ctrl.held[pos] == want and ctrl.base.tokens[pos].item() == want
    rest = list(gen)
    assert rest[-1].kind == "ok" and ctrl.frames[12].token_ids[pos] == want
    with svc.reader() as s:
        pins = repo.active_pins(s, run_id=st.run_id)
    assert [(p.span_start, p.text.strip()) for p in pins] == [(pos, svc.tokenizer.decode([want]).strip() or
                                                               repr(svc.tokenizer.decode([want])))]
    assert later  # the stream went on meanwhile


def test_a_click_after_a_length_changing_edit_lands_on_the_moved_token(app_services):
    svc = app_services
    gen = start(svc, steps=6)
    ups = [next(gen) for _ in range(3)]
    st = ups[-1].state
    draft.pause(svc, "alice", st)
    list(gen)
    old = ups[-1]
    ctrl = svc.runs.get(st.run_id)
    f = free(old)
    a, b, far = f[1], f[3], f[-2]
    seen_token = ctrl.base.tokens[far].item()
    up = steering.edit_span(svc, "alice", st, a, b, " hydraulic pump leak at the aft bay")
    assert up.kind == "ok", up.message
    grown = ctrl.base.length - old.payload["cells"].__len__()
    assert grown != 0
    # a click made on the view drawn before the edit
    pinned = steering.toggle_pin(svc, "alice", st, far, old.payload["step"], old.payload["layout"])
    assert pinned.kind == "ok", pinned.message
    assert far + grown in ctrl.held and ctrl.held[far + grown] == seen_token
    inside = steering.toggle_pin(svc, "alice", st, a, old.payload["step"], old.payload["layout"])
    assert inside.kind == "error" and "replaced by an edit" in inside.message


def test_a_complete_draft_can_be_changed_and_refined(app_services):
    svc = app_services
    ups = list(start(svc, steps=8))
    st, last = ups[-1].state, ups[-1]
    ctrl = svc.runs.get(st.run_id)
    f = free(last)
    pos = f[4]
    up = steering.toggle_pin(svc, "alice", st, pos)
    assert up.kind == "ok" and "refines" in up.message
    edit = steering.edit_span(svc, "alice", st, f[8], f[10], " torque wrench")
    assert edit.kind == "ok", edit.message
    refined = list(draft.resume(svc, "alice", st))
    assert refined[-1].kind == "ok" and refined[-1].step == 8
    assert [u.step for u in refined] == [7, 8]  # a quarter of the 8 steps run again
    new = refined[-1].state
    assert new.run_id != st.run_id
    text = refined[-1].text
    assert "torque wrench" in text
    with svc.reader() as s:
        run = repo.get_run(s, new.run_id)
        assert run.parent_run_id == st.run_id and run.sampler_settings["refined_from_step"] == 8
    # accepting a changed complete draft as it is takes the change
    ups2 = list(start(svc, steps=4, seed=3))
    st2 = ups2[-1].state
    f2 = free(ups2[-1])
    assert steering.edit_span(svc, "alice", st2, f2[2], f2[3], " fuel line").kind == "ok"
    acc = draft.accept(svc, "alice", st2)
    assert acc.kind == "ok", acc.message
    with svc.reader() as s:
        assert "fuel line" in s.get(Document, st2.document_id).text
    del ctrl


def test_lock_term_matches_any_case_unless_asked(app_services):
    svc = app_services
    ups = list(start(svc, steps=4))
    st = ups[-1].state
    # the template's own label is upper case; a lower-case free occurrence is made by an edit
    f = free(ups[-1])
    assert steering.edit_span(svc, "alice", st, f[1], f[2], " Hydraulic Pump. ").kind == "ok"
    exact = steering.lock_term(svc, "alice", st, "hydraulic pump", match_case=True)
    assert exact.kind == "error" and "exact case" in exact.message
    # the edited span is held already: lock a word of it elsewhere after another edit
    ctrl = svc.runs.get(st.run_id)
    g = [p for p in range(ctrl.base.length) if p not in ctrl.held]
    assert steering.edit_span(svc, "alice", st, g[-3], g[-2], " HYDRAULIC PUMP. ").kind == "ok"
    ctrl.held = {p: v for p, v in ctrl.held.items() if ctrl.kinds.get(p) != "edit"}
    ctrl.kinds = {p: k for p, k in ctrl.kinds.items() if k != "edit"}
    up = steering.lock_term(svc, "alice", st, "hydraulic pump")
    assert up.kind == "ok" and "2 occurrence(s)" in up.message, up.message
    with svc.reader() as s:
        assert s.scalars(select(AuditEvent.action).where(AuditEvent.action == "pin.lock_term")).first()


@pytest.mark.parametrize("field", ["title", "replacement", "term", "reason"])
def test_a_lone_surrogate_is_refused_with_a_clear_message(app_services, field):
    svc = app_services
    bad = "pump \ud800 leak"
    if field == "title":
        ups = list(start(svc, steps=2, title=bad))
        assert len(ups) == 1 and ups[0].kind == "error" and "surrogate" in ups[0].message
        with svc.reader() as s:
            assert s.scalars(select(Document)).first() is None
        return
    ups = list(start(svc, steps=2))
    st = ups[-1].state
    f = free(ups[-1])
    if field == "replacement":
        up = steering.edit_span(svc, "alice", st, f[0], f[1], bad)
    elif field == "term":
        up = steering.lock_term(svc, "alice", st, bad)
    else:
        up = steering.edit_span(svc, "alice", st, f[0], f[1], " fine", bad)
    assert up.kind == "error" and "surrogate" in up.message and "U+D800" in up.message


@pytest.mark.parametrize("steps", [-1, 0, 1e9, 513])
def test_steps_out_of_range_are_refused_with_the_range(app_services, steps):
    ups = list(start(app_services, steps=steps))
    assert len(ups) == 1 and ups[0].kind == "error"
    assert "between 1 and 512" in ups[0].message


def test_over_long_replacement_and_draft_are_refused_with_the_limit(app_services):
    svc = app_services
    ups = list(start(svc, steps=2))
    st = ups[-1].state
    f = free(ups[-1])
    up = steering.edit_span(svc, "alice", st, f[0], f[1], "x" * 4001)
    assert up.kind == "error" and "4,001 characters" in up.message and "4,000" in up.message
    grow = " hydraulic pump " * 240  # about 500 tokens a time: the fourth would pass 2,048
    for _ in range(6):
        ctrl = svc.runs.get(st.run_id)
        g = [p for p in range(ctrl.base.length) if p not in ctrl.held]
        up = steering.edit_span(svc, "alice", st, g[0], g[0] + 1, grow)
        if up.kind == "error":
            break
    assert up.kind == "error" and "at most 2048" in up.message
    assert svc.runs.get(st.run_id).base.length <= 2048


def test_stream_status_and_act_results_go_to_separate_lines(app_services):
    svc = app_services
    gen = start(svc, steps=4)
    first = next(gen)
    out = draft_outputs(first)
    status = 6  # the index of the status line among DraftTab.outputs
    assert first.streamed and not isinstance(out[0], str) and "dd-msg" in out[status]  # the status line only
    act = steering.toggle_pin(svc, "alice", first.state, free(first)[0])
    out = draft_outputs(act)
    assert "pinned position" in out[0] and not isinstance(out[status], str)  # the act line only
    list(gen)


def test_the_watch_pace_spaces_the_shown_steps(app_services):
    svc = app_services
    t0 = time.perf_counter()
    ups = list(start(svc, steps=4, pace="watch"))
    assert len(ups) == 5 and time.perf_counter() - t0 >= 4 * draft.PACES["watch"] * 0.9
    bad = list(start(svc, steps=4, pace="warp"))
    assert bad[0].kind == "error" and "pace" in bad[0].message


def test_a_complete_draft_holds_no_noise_placeholder(app_services):
    for seed in range(3):
        ups = list(start(app_services, steps=6, seed=seed, template=draft.FREE_LENGTH, length=48))
        assert ups[-1].kind == "ok"
        assert not [c for c in ups[-1].payload["cells"] if "s" in c["k"]]


def test_a_token_that_decodes_to_nul_can_be_pinned(app_services):
    """Model text may hold a NUL byte (the database takes none): the pin stores U+FFFD for it."""
    import dataclasses

    svc = app_services
    nul = next(i for i in range(svc.tokenizer.vocab_size) if svc.tokenizer.decode([i]) == "\x00")
    ups = list(start(svc, steps=3, template=None, length=16))
    st = ups[-1].state
    ctrl = svc.runs.get(st.run_id)
    with ctrl.lock:  # as if the model had written it
        tokens = ctrl.base.tokens.clone()
        tokens[5] = nul
        ctrl.base = dataclasses.replace(ctrl.base, tokens=tokens)
    up = steering.pin_span(svc, "alice", st, 5, 6)
    assert up.kind == "ok", up.message
    with svc.reader() as s:
        (pin,) = repo.active_pins(s, run_id=st.run_id)
    assert pin.text == "\ufffd" and ctrl.held[5] == nul
