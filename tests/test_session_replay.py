"""One whole session, recorded once and replayed on every run: a template draft, a pin, a locked
term, a length-changing edit, a branch, accept, a signed review and an audit export. The stored
rows of every table and the exported CSV must equal the recording in tests/golden/.

The recording was made on the code before the app, storage and engine were reshaped into one
concept per file, so this test is the proof that the reshaping changed no behaviour. Values that
differ on every run (timestamps, hashes that cover them, password hashes, file names with a
random part, the database's random server secrets) are replaced by a marker before comparing;
everything else is compared as stored.

To record again after a deliberate change of behaviour:
    DIFFDRAFT_RECORD_GOLDEN=1 bash .ci/dev test tests/test_session_replay.py
and say why in the commit.
"""

from __future__ import annotations

import csv
import json
import os
import re
from pathlib import Path
from typing import Any

import pytest
import storage_fixtures as sf
from sqlalchemy import LargeBinary, select

from app.state import DraftState
from storage import repository as repo
from storage.models import Base

GOLDEN = Path(__file__).parent / "golden" / "session_replay.json"
VOLATILE = "<volatile>"
# columns whose values change on every run
VOLATILE_NAME = re.compile(r"(^|_)(ts|at|hash|salt|secret|when|time|path|elapsed_ms|token|owner|until)$|_at$|"
                           r"^password|hash|sha256|^confidence$")
STAMP = re.compile(r"\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}(:\d{2}(\.\d+)?)?([+-]\d{2}:?\d{2}|Z)?|\d{8}T\d{6}Z")


def _handlers() -> dict[str, Any]:
    """The app's handler functions by their job (they may live in several modules)."""
    from app import audit, draft, review, steering

    modules = {"generate": draft, "pause": draft, "resume": draft, "toggle_pin": steering, "lock_term": steering,
               "edit_span": steering, "view_step": draft, "accept": draft, "review_queue": review,
               "open_review": review, "sign_review": review, "export_audit": audit, "AuditQuery": audit}
    return {n: getattr(m, n) for n, m in modules.items()}


def _scrub(value: Any) -> Any:
    if isinstance(value, str):
        return STAMP.sub(VOLATILE, value)
    if isinstance(value, dict):
        return {k: (VOLATILE if VOLATILE_NAME.search(k) else _scrub(v)) for k, v in value.items()}
    if isinstance(value, list):
        return [_scrub(v) for v in value]
    return value


def _cell(column: Any, value: Any) -> Any:
    if value is None:
        return None
    if VOLATILE_NAME.search(column.name):
        return VOLATILE
    if isinstance(column.type, LargeBinary):
        if column.name == "confidences":  # float16: rounded, so that a last-bit difference is not a change
            return [round(x, 2) for x in repo.decode_confidences(value)]
        if column.name == "kinds":  # one ASCII letter per position
            return value.decode("ascii")
        return repo.decode_token_ids(value)
    if isinstance(value, str):
        return _cell_text(value)
    if isinstance(value, (dict, list, int, float, bool)):
        return _scrub(value)
    return VOLATILE  # datetimes and anything else that is not plain data


def dump_tables(svc: Any) -> dict[str, list[dict[str, Any]]]:
    out: dict[str, list[dict[str, Any]]] = {}
    with svc.reader() as s:
        for table in Base.metadata.sorted_tables:
            order = list(table.primary_key.columns) or list(table.columns)
            rows = s.execute(select(table).order_by(*order)).mappings().all()
            out[table.name] = [{c.name: _cell(c, row[c.name]) for c in table.columns} for row in rows]
    return out


def dump_csv(path: str) -> list[dict[str, Any]]:
    with open(path, newline="", encoding="utf-8") as f:
        return [{k: (VOLATILE if VOLATILE_NAME.search(k) else _cell_text(v)) for k, v in row.items()}
                for row in csv.DictReader(f)]


def _cell_text(value: str) -> Any:
    if value[:1] in "{[":
        try:
            return _scrub(json.loads(value))
        except ValueError:
            pass
    return _scrub(value)


def play_session(svc: Any) -> dict[str, Any]:
    """The scripted session; returns what was shown to the people (messages) along the way."""
    h = _handlers()
    shown: list[str] = []

    def note(up: Any) -> Any:
        shown.append(f"{up.kind}: {up.message}")
        return up

    gen = h["generate"](svc, "alice", DraftState(), template="Shift handover", length=None, steps=8, seed=7,
                        temperature=1.0)
    ups = [next(gen), next(gen), next(gen)]  # steps 0..2 on screen
    st = ups[-1].state
    note(h["pause"](svc, "alice", st))
    rest = list(gen)
    note(rest[-1])
    free = [c["i"] for c in ups[-1].payload["cells"] if "m" not in c["k"]]
    note(h["toggle_pin"](svc, "alice", st, free[0]))
    cells = ups[-1].payload["cells"]
    words = [c["t"].strip() for c, nxt in zip(cells, cells[1:]) if not c["k"] and c["i"] > free[6]
             and re.fullmatch(r" ?[a-z]{2,}", c["t"]) and not nxt["t"][:1].isalnum()]
    term = words[0]  # a free token of the draft at step 2 that reads as a whole word
    note(h["edit_span"](svc, "alice", st, free[3], free[5], " hydraulic pump leak at the aft bay", "wrong part"))
    note(h["lock_term"](svc, "alice", st, term))
    done = list(h["resume"](svc, "alice", st))
    note(done[-1])
    back = note(h["view_step"](svc, "alice", st, 5))
    later = [c["i"] for c in back.payload["cells"] if not c["k"]]  # free and not held
    note(h["toggle_pin"](svc, "alice", st, later[-2]))
    branch = list(h["resume"](svc, "alice", st))
    note(branch[-1])
    st = branch[-1].state
    note(h["accept"](svc, "alice", st))
    queue = h["review_queue"](svc, "bob")
    shown.append(f"queue: {[row[0] for row in queue.queue]}")
    opened = h["open_review"](svc, "bob", st.document_id)
    note(h["sign_review"](svc, "bob", opened.state, "approve", "complete and correct", sf.PASSWORD))
    exported = note(h["export_audit"](svc, "maya", h["AuditQuery"](), "csv"))
    return {"shown": [_scrub(m) for m in shown], "final_text": branch[-1].text, "csv": dump_csv(exported.file)}


def test_a_recorded_session_replays_to_the_same_rows_and_export(app_services):
    got = play_session(app_services)
    got["tables"] = dump_tables(app_services)
    if os.environ.get("DIFFDRAFT_RECORD_GOLDEN") == "1":
        GOLDEN.write_text(json.dumps(got, indent=1, sort_keys=True, ensure_ascii=False) + "\n", encoding="utf-8")
        pytest.skip(f"recorded {GOLDEN}; rerun without DIFFDRAFT_RECORD_GOLDEN to compare")
    assert GOLDEN.is_file(), f"{GOLDEN} is missing: record it (see this file's docstring)"
    want = json.loads(GOLDEN.read_text(encoding="utf-8"))
    assert got["shown"] == want["shown"]
    assert got["final_text"] == want["final_text"]
    for table in want["tables"]:
        assert got["tables"].get(table) == want["tables"][table], f"table {table} differs from the recording"
    assert set(got["tables"]) == set(want["tables"])
    assert got["csv"] == want["csv"]
    assert len(want["csv"]) > 10 and any(r for r in want["tables"]["edits"])  # the recording is not empty
