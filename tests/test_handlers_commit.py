"""The app with a model that drafts the recommended way (commitment, the word rule): pins, edits
and the run's recorded settings hold, and every word the model wrote is a lexicon word."""

from __future__ import annotations

import dataclasses
import shutil

import pytest
import storage_fixtures as sf

from app import draft, steering
from app.state import DraftState
from engine import checkpoint
from engine.config import RECOMMENDED_SAMPLER
from engine.tiny import corpus
from engine.words import build_lexicon
from storage import repository as repo


@pytest.fixture
def commit_services(tiny_model_dir, tmp_path, cheap_argon2):
    from app.services import build_services

    folder = tmp_path / "model"
    shutil.copytree(tiny_model_dir, folder)
    checkpoint.amend(folder, sampler_cfg=dataclasses.replace(RECOMMENDED_SAMPLER, steps=10), lexicon=build_lexicon(corpus()))
    svc = build_services(folder, data_dir=tmp_path / "data", login_delay_s=0.0)
    sf.seed_users(svc.factory)
    yield svc
    svc.close()


def test_a_committing_run_keeps_pins_edits_and_whole_words(commit_services):
    svc = commit_services
    gen = draft.generate(svc, "alice", DraftState(), template="Shift handover", length=None, steps=10, seed=2, temperature=0.9)
    ups = [next(gen), next(gen), next(gen)]
    st = ups[-1].state
    free = [c["i"] for c in ups[-1].payload["cells"] if "m" not in c["k"]]
    assert steering.toggle_pin(svc, "alice", st, free[1]).kind == "ok"
    pinned_tok = list(svc.runs.get(st.run_id).frames[ups[-1].step].token_ids)[free[1]]
    a, b = free[5], free[7]
    assert steering.edit_span(svc, "alice", st, a, b, " hydraulic pump leak", "wrong part").kind == "ok"
    rest = list(gen)
    assert rest[-1].step == 10 and rest[-1].kind == "ok"
    new_ids = svc.tokenizer.encode(" hydraulic pump leak")
    with svc.reader() as s:
        run = repo.get_run(s, st.run_id)
        assert run.sampler_settings["commit"] is True and run.sampler_settings["whole_words"] is True
        last = repo.list_steps(s, st.run_id)[-1]
    assert last.token_ids[free[1]] == pinned_tok
    assert last.token_ids[a:a + len(new_ids)] == new_ids
    held = {p for p, k in svc.runs.get(st.run_id).kinds.items() if k} | {free[1]} | set(range(a, a + len(new_ids)))
    # a word that touches a pin is the person's (here the pinned piece "ts" glues to " two");
    # every word made only of tokens the model wrote is a lexicon word
    broken = [sp for sp in svc.ckpt.words.broken_spans(list(last.token_ids)) if not set(sp) & held]
    assert broken == [], [svc.tokenizer.decode([last.token_ids[p] for p in sp]) for sp in broken]


def test_a_run_recorded_before_the_schedule_power_keeps_committing_a_constant_share(commit_services):
    from app.runs import sampler_config

    svc = commit_services
    svc.ckpt.sampler_cfg = dataclasses.replace(svc.ckpt.sampler_cfg, commit_power=2.0)
    old = {k: v for k, v in dataclasses.asdict(svc.ckpt.sampler_cfg).items() if k != "commit_power"}
    assert sampler_config(svc, old).commit_power == 1.0
    assert sampler_config(svc, {**old, "commit_power": 2.5}).commit_power == 2.5
    assert sampler_config(svc, {"steps": 12}).commit_power == 2.0, "a run that recorded no commitment takes the model's"
