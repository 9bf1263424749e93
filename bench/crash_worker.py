"""The app process of the crash test (bench.crash_runs): it reopens the run as its owner would,
checks that every acknowledged act is held, and steers the run until it is killed. Acts are
acknowledged (appended to a file and fsynced) only after the handler returned ok.
"""

from __future__ import annotations

import json
import os
import random
import time
from pathlib import Path
from typing import Any

USER = "alice"
STEER = ("pin.add", "pin.lock_term", "pin.remove", "edit", "run.start")
LEASE_S = "1"
WORDS = ["valve", "hydraulic", "pump", "inspected", "replaced", "torque", "crack", "found", "per", "manual"]


# ------------------------------------------------------------------------------ the app process
def _snapshot(ctrl: Any, svc: Any) -> dict[str, Any]:
    assert ctrl.base is not None
    return {"run_id": ctrl.run_id, "length": ctrl.base.length, "layout": ctrl.layout,
            "held": sorted([p, t, ctrl.kinds.get(p, "")] for p, t in ctrl.held.items()),
            "branch_from": ctrl.branch_from}


def _count(svc: Any, document_id: int) -> int:
    from sqlalchemy import func, select

    from storage.models import AuditEvent

    with svc.reader() as s:
        return int(s.scalar(select(func.count()).select_from(AuditEvent).where(
            AuditEvent.document_id == document_id, AuditEvent.action.in_(STEER))) or 0)


def _max_run(svc: Any, document_id: int) -> int:
    from sqlalchemy import func, select

    from storage.models import Run

    with svc.reader() as s:
        return int(s.scalar(select(func.max(Run.id)).where(Run.document_id == document_id)) or 0)


def _ack(path: Path, svc: Any, ctrl: Any, act: str, extra: dict[str, Any] | None = None) -> None:
    line = {"act": act, "document_id": ctrl.document_id, "count": _count(svc, ctrl.document_id),
            "version": ctrl.version,
            "max_run": _max_run(svc, ctrl.document_id),
            "snapshot": _snapshot(ctrl, svc), **(extra or {})}
    with open(path, "a", encoding="utf-8") as f:
        f.write(json.dumps(line) + "\n")
        f.flush()
        os.fsync(f.fileno())


def acks(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    out = []
    for raw in path.read_text(encoding="utf-8").splitlines():
        try:
            out.append(json.loads(raw))
        except ValueError:  # a line cut by the kill was never acknowledged
            break
    return out


def _free(ctrl: Any) -> list[int]:
    assert ctrl.base is not None
    return [p for p in range(ctrl.base.length) if p not in ctrl.held]


def _act(svc: Any, st: Any, rng: random.Random, ack: Path) -> Any:
    """One steering act on the run on screen; acknowledged (written to `ack`) once it returned ok.
    Returns the state of the run on screen afterwards (a branch changes it)."""
    from app import runs, steering

    ctrl = runs.control_for(svc, st)
    free = _free(ctrl)
    kind = rng.choice(["pin", "pin", "span", "term", "edit", "edit"])
    if kind == "pin" and free:
        up = steering.toggle_pin(svc, USER, st, rng.choice(free))
    elif kind == "span" and len(free) > 2:
        a = rng.choice(free[:-2])
        up = steering.pin_span(svc, USER, st, a, a + 2) if a + 1 in free else None
    elif kind == "term":
        with ctrl.lock:
            pieces = svc.tokenizer.pieces(ctrl.base.tokens.tolist())
        words = [pieces[p].strip() for p in free if pieces[p].strip().isalpha() and len(pieces[p].strip()) > 2]
        up = steering.lock_term(svc, USER, st, rng.choice(words)) if words else None
    else:
        runs_of = [p for p in free if p + 1 in free]
        if not runs_of:
            return st
        a = rng.choice(runs_of)
        text = " " + " ".join(rng.choice(WORDS) for _ in range(rng.randint(1, 3)))
        up = steering.edit_span(svc, USER, st, a, a + 2, text, "crash test")
        if up.kind == "ok":
            _ack(ack, svc, ctrl, "edit", {"text": text})
            return st
    if up is not None and up.kind == "ok":
        _ack(ack, svc, ctrl, kind)
    return st


def _branch(svc: Any, st: Any, gen: Any, rng: random.Random, ack: Path) -> tuple[Any, Any]:
    """Pause, go back to an earlier step, pin there and resume: a new run continues (a branch)."""
    from app import draft, runs, steering

    draft.pause(svc, USER, st)
    for _ in gen:
        pass
    ctrl = runs.control_for(svc, st)
    if ctrl.last_index < 3:
        return st, draft.resume(svc, USER, st, pace="fast")
    k = rng.randint(1, ctrl.last_index - 1)
    draft.view_step(svc, USER, st, k)
    free = _free(ctrl)
    if free:
        up = steering.toggle_pin(svc, USER, st, rng.choice(free))
        if up.kind == "ok":
            _ack(ack, svc, ctrl, "pin_back")
    gen = draft.resume(svc, USER, st, pace="fast")
    first = next(gen, None)
    if first is not None and first.state is not None and first.state.run_id != st.run_id:
        st = first.state
        _ack(ack, svc, runs.control_for(svc, st), "branch")
    return st, gen


def _verify(svc: Any, acked: list[dict[str, Any]]) -> tuple[Any, dict[str, Any]]:
    """The owner reopens the run: is every acknowledged act held?"""
    from sqlalchemy import select

    from app import draft, runs
    from app.state import DraftState
    from storage import repository as repo
    from storage.models import Run

    last = acked[-1]
    snap = last["snapshot"]
    rid = snap["run_id"]
    count = _count(svc, last["document_id"])
    with svc.reader() as s:  # a branch made but not acknowledged: the owner sees it in the runs list
        newer = s.scalars(select(Run.id).where(Run.parent_run_id == rid, Run.id > last["max_run"])
                          .order_by(Run.id.desc())).first()
    branched = count > last["count"] and newer is not None
    # the acknowledged acts are checked where they are: in the acknowledged run, or, when they were
    # made on an earlier step (a branch point) and the branch was then made, in that branch
    if branched and snap.get("branch_from") is not None:
        rid = newer
    up = draft.open_run(svc, USER, None, rid)
    ctrl = runs.control_for(svc, DraftState(document_id=last["document_id"], run_id=rid))
    st = DraftState(document_id=last["document_id"], run_id=newer if branched else rid)  # the owner goes on here
    got = _snapshot(ctrl, svc)
    last_base = ctrl.base
    if ctrl.live is not None and ctrl.branch_from is not None and (snap.get("branch_from") is None
                                                                   or rid != snap["run_id"]):
        # the person had gone back to an earlier step after the last acknowledged act (going back
        # is no steering act): the acknowledged draft is the last step, kept aside (`live`). So
        # too in a branch made after the acknowledged view of an earlier step: going back in it,
        # even to a step before its branch point, keeps its last step aside
        held, kinds, _, base, layout = ctrl.live
        last_base = base
        got = {**got, "length": base.length, "layout": layout,
               "held": sorted([p, t, kinds.get(p, "")] for p, t in held.items())}
    result: dict[str, Any] = {"lost": 0, "in_flight": 0, "mismatch": 0, "open": up.kind != "error"}
    if count == last["count"]:
        if {k: got[k] for k in ("length", "layout", "held")} != {k: snap[k] for k in ("length", "layout", "held")}:
            result["lost"] = 1
            result["detail"] = {"want": snap, "got": got, "acked_version": last.get("version"),
                                "version": ctrl.version, "act": last["act"], "cycle_of_ack": len(acked)}
    else:
        result["in_flight"] = 1
        want = sorted((t, k) for _, t, k in snap["held"] if k in ("pin", "term"))
        have = sorted((t, k) for _, t, k in got["held"] if k in ("pin", "term"))
        text = svc.tokenizer.decode(last_base.tokens.tolist())
        missing = [w for w in want if have.count(w) < want.count(w)]
        # an acknowledged view of an earlier step (a branch point) holds no edit made after that step:
        # then the held pins say it all; otherwise the run's last acknowledged edit must be in the draft
        edits = [a["text"] for a in acked if a["act"] == "edit" and a["snapshot"]["run_id"] in (rid, snap["run_id"])
                 and snap.get("branch_from") is None]
        if missing or any(e.strip() not in text for e in edits[-1:]):
            result["lost"] = 1
            result["detail"] = {"missing": missing, "edits": edits[-1:]}
    with svc.reader() as s:
        db_pins = {p for pin in repo.active_pins(s, run_id=rid) for p in range(pin.span_start, pin.span_end)}
    kinds_now = ctrl.live[1] if ctrl.live is not None and ctrl.branch_from is not None else ctrl.kinds
    state_pins = {p for p, k in kinds_now.items() if k in ("pin", "term")}
    result["mismatch"] = int(db_pins != state_pins)
    if result["mismatch"]:
        result["mismatch_detail"] = {"run": rid, "db_only": sorted(db_pins - state_pins),
                                     "state_only": sorted(state_pins - db_pins)}
    return st, result


def worker(cfg: dict[str, Any]) -> None:
    """One app process: reopen and check (after a kill), then steer until it is killed or done."""
    import torch

    from app import draft, runs
    from app.services import build_services
    from app.state import DraftState

    torch.set_num_threads(1)
    os.environ["DIFFDRAFT_RUN_LEASE_S"] = LEASE_S
    ack, out = Path(cfg["ack"]), Path(cfg["out"])
    rng = random.Random(cfg["seed"])
    svc = build_services(cfg["model"], db_url=cfg["db_url"], data_dir=cfg["data"], login_delay_s=0.0)
    svc.step_delay_s = 0.02
    done = acks(ack)
    if done:
        st, result = _verify(svc, done)
        result["cycle"] = cfg["cycle"]
        with open(out, "a", encoding="utf-8") as f:
            f.write(json.dumps(result) + "\n")
        while True:  # the dead process's lease runs out within LEASE_S
            gen = draft.resume(svc, USER, st, pace="fast")
            first = next(gen, None)
            if first is None or "another app process" not in first.message:
                break
            time.sleep(0.2)
        if first is not None and first.kind == "error" and "complete" in first.message:
            ctrl = runs.control_for(svc, st)  # a complete draft: change it, Resume refines it
            _act(svc, st, rng, ack)
            gen = draft.resume(svc, USER, st, pace="fast")
        elif first is not None and first.state is not None:
            st = first.state
    else:
        gen = draft.generate(svc, USER, DraftState(), template=None, length=48, steps=60, seed=cfg["seed"],
                             temperature=1.0, pace="fast")
        first = next(gen)
        st = first.state
    n = 0
    while True:
        up = next(gen, None)
        if up is None:
            ctrl = runs.control_for(svc, st)
            if ctrl.complete:  # refine: change the complete draft and resume
                _act(svc, st, rng, ack)
                gen = draft.resume(svc, USER, st, pace="fast")
                continue
            gen = draft.resume(svc, USER, st, pace="fast")
            continue
        n += 1
        if up.state is not None:
            st = up.state
        if n % 3 == 0:
            if rng.random() < 0.12:
                st, gen = _branch(svc, st, gen, rng, ack)
            else:
                st = _act(svc, st, rng, ack)


def check_finish(cfg: dict[str, Any]) -> None:
    """After the last kill: finish the run, check its held tokens, sweep dead leases."""
    import torch

    from app import draft, runs
    from app.services import build_services
    from storage import repository as repo
    from storage.db import transaction
    from storage.models import Run

    torch.set_num_threads(1)
    svc = build_services(cfg["model"], db_url=cfg["db_url"], data_dir=cfg["data"], login_delay_s=0.0)
    time.sleep(float(LEASE_S) + 0.2)
    with transaction(svc.factory) as s:
        repo.pause_interrupted(s)
    done = acks(Path(cfg["ack"]))
    st, result = _verify(svc, done) if done else (None, {"lost": 0, "in_flight": 0, "mismatch": 0})
    broken = 0
    if st is not None:
        ups = list(draft.resume(svc, USER, st, pace="fast"))
        ctrl = runs.control_for(svc, ups[-1].state if ups and ups[-1].state else st)
        broken = sum(int(ctrl.base.tokens[p]) != t for p, t in ctrl.held.items())
    from sqlalchemy import func, select

    with svc.reader() as s:
        running = int(s.scalar(select(func.count()).select_from(Run).where(Run.status == "running")) or 0)
    Path(cfg["out"]).write_text(json.dumps({**result, "broken": broken, "running": running}) + "\n")
    svc.close()
