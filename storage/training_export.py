"""QA feedback as training data: the files `engine.train --feedback DIR` reads.

Storage may not import the engine, so the hand-over is plain files, one JSON object a line, all
UTF-8, written into one folder:

  approved.jsonl  {"document", "template", "model_id", "text"}: the final text of every approved
                  document, the template it was drafted from (name or null) and the model of its
                  last run (null when no run made it)
  edits.jsonl     {"edit", "document", "document_status", "template", "model_id", "unit",
                  "old_text", "new_text", "before", "after", "reason"}: one reviewer correction
                  each, what the model wrote (old_text) and what the person put there (new_text),
                  with the document's current text around it (before + new_text + after is that
                  text); before / after are null when the correction can no longer be found in it
                  (a later edit overwrote it). Only documents that are not rejected or discarded.
  terms.jsonl     {"template", "term", "count"}: terms people locked, per template
  rejected.jsonl  {"document", "template", "model_id", "text", "reasons"}: rejected drafts with
                  the reviewers' reasons; the engine never trains toward them
  manifest.json   {"format", "kind": "training", "counts", "files": {name: sha256}}

No user names, titles or ids of people are written. The export needs the "export" and
"feedback.read" permissions (managers and admins) and is recorded like an audit export: a row in
`exports` (format "json", filters {"kind": "training", ...}) and an "export" audit event, in the
caller's transaction.
"""

from __future__ import annotations

import json
import os
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from storage.audit import append_event
from storage.errors import StorageError, ValidationError
from storage.models import Document, Edit, Export, Pin, Review, Run, Step, Template
from storage.repository import require

FORMAT = 1
FILES = ("approved.jsonl", "edits.jsonl", "terms.jsonl", "rejected.jsonl")
NOT_POSITIVE = ("rejected", "discarded")  # documents whose text and edits are never training targets


@dataclass(frozen=True)
class TrainingData:
    """The rows of each file (see the module docstring), in id order."""

    approved: list[dict[str, Any]]
    edits: list[dict[str, Any]]
    terms: list[dict[str, Any]]
    rejected: list[dict[str, Any]]

    def counts(self) -> dict[str, int]:
        return {"approved": len(self.approved), "edits": len(self.edits), "terms": len(self.terms),
                "rejected": len(self.rejected)}


def _last_models(session: Session) -> dict[int, str]:
    """document id -> model id of its newest run."""
    newest = select(Run.document_id, func.max(Run.id).label("run_id")).group_by(Run.document_id).subquery()
    stmt = select(Run.document_id, Run.model_id).join(newest, newest.c.run_id == Run.id)
    return {d: m for d, m in session.execute(stmt)}


def locate(text: str, new_text: str, hint: float) -> int | None:
    """Where `new_text` sits in `text`: the occurrence whose start is nearest to hint * len(text)
    (hint in [0, 1], the edit's relative position), None when it does not occur."""
    if not new_text:
        return None
    starts, i = [], text.find(new_text)
    while i >= 0:
        starts.append(i)
        i = text.find(new_text, i + 1)
    if not starts:
        return None
    target = hint * len(text)
    return min(starts, key=lambda s: (abs(s - target), s))


def _char_positions(edits: list[Edit], final: str) -> dict[int, int | None]:
    """For a document's char edits (oldest first): where each one's new text starts in the final
    text, following the later char edits' shifts; None when a later edit overlapped it."""
    out: dict[int, int | None] = {}
    for i, e in enumerate(edits):
        start: int | None = e.span_start
        end = e.span_start + len(e.new_text)
        for later in edits[i + 1:]:
            if start is None:
                break
            if later.span_end <= start and later.span_start < start:
                shift = len(later.new_text) - (later.span_end - later.span_start)
                start, end = start + shift, end + shift
            elif later.span_start >= end and not (later.span_start == end == start):
                continue
            else:
                start = None
        ok = start is not None and final[start:start + len(e.new_text)] == e.new_text
        out[e.id] = start if ok else None
    return out


def _edit_rows(session: Session, docs: dict[int, Document], templates: dict[int, str],
               models: dict[int, str]) -> list[dict[str, Any]]:
    edits = list(session.scalars(select(Edit).order_by(Edit.id)))
    lengths = {(r, k): n for r, k, n in session.execute(select(Step.run_id, Step.step_index, Step.n_tokens))}
    run_models = dict(session.execute(select(Run.id, Run.model_id)).all())
    by_doc: dict[int, list[Edit]] = {}
    for e in edits:
        by_doc.setdefault(e.document_id, []).append(e)
    rows = []
    for doc_id, doc_edits in by_doc.items():
        doc = docs.get(doc_id)
        if doc is None or doc.status in NOT_POSITIVE:  # outside the date filter, or not a positive
            continue
        char_at = _char_positions([e for e in doc_edits if e.unit == "char"], doc.text)
        for e in doc_edits:
            if e.unit == "char":
                start = char_at.get(e.id)
            else:
                n = lengths.get((e.run_id, e.step_index)) or 0
                start = locate(doc.text, e.new_text, e.span_start / n if n else 0.0)
            before = doc.text[:start] if start is not None else None
            after = doc.text[start + len(e.new_text):] if start is not None else None
            rows.append({"edit": e.id, "document": doc_id, "document_status": doc.status,
                         "template": templates.get(doc.template_id or -1),
                         "model_id": run_models.get(e.run_id) or models.get(doc_id), "unit": e.unit,
                         "old_text": e.old_text, "new_text": e.new_text, "before": before, "after": after,
                         "reason": e.reason})
    return sorted(rows, key=lambda r: r["edit"])


def training_data(session: Session, *, actor: str, since: datetime | None = None,
                  until: datetime | None = None) -> TrainingData:
    """The rows of the training files (documents updated in [since, until) when given), after
    checking that `actor` may read QA feedback and export it."""
    require(session, actor, "feedback.read")
    require(session, actor, "export")
    stmt = select(Document).order_by(Document.id)
    if since is not None:
        stmt = stmt.where(Document.updated_at >= since)
    if until is not None:
        stmt = stmt.where(Document.updated_at < until)
    docs = {d.id: d for d in session.scalars(stmt)}
    templates = dict(session.execute(select(Template.id, Template.name)).all())
    models = _last_models(session)
    approved = [{"document": d.id, "template": templates.get(d.template_id or -1), "model_id": models.get(d.id),
                 "text": d.text} for d in docs.values() if d.status == "approved"]
    reasons: dict[int, list[str]] = {}
    for doc_id, reason in session.execute(select(Review.document_id, Review.reason)
                                          .where(Review.decision == "reject").order_by(Review.id)):
        reasons.setdefault(doc_id, []).append(reason or "")
    rejected = [{"document": d.id, "template": templates.get(d.template_id or -1), "model_id": models.get(d.id),
                 "text": d.text, "reasons": reasons.get(d.id, [])} for d in docs.values() if d.status == "rejected"]
    edits = _edit_rows(session, docs, templates, models)
    term_counts: Counter[tuple[str | None, str]] = Counter()
    for doc_id, text in session.execute(select(Pin.document_id, Pin.text).where(Pin.kind == "term",
                                                                               Pin.supersedes_pin_id.is_(None))):
        if doc_id in docs and docs[doc_id].status not in NOT_POSITIVE:
            term_counts[(templates.get(docs[doc_id].template_id or -1), text)] += 1
    terms = [{"template": t, "term": term, "count": n}
             for (t, term), n in sorted(term_counts.items(), key=lambda kv: (kv[0][0] or "", kv[0][1]))]
    return TrainingData(approved, edits, terms, rejected)


def _jsonl(rows: Iterable[dict[str, Any]]) -> bytes:
    return "".join(json.dumps(r, ensure_ascii=False, sort_keys=True) + "\n" for r in rows).encode("utf-8")


def export_training(session: Session, out_dir: str | os.PathLike[str], *, actor: str,
                    since: datetime | None = None, until: datetime | None = None) -> Export:
    """Write the training files into `out_dir` (created if its parent exists; files replaced) and
    record the export (row + audit event) in the caller's transaction."""
    import hashlib

    by = require(session, actor, "export")
    assert by is not None  # the system actor may not export
    data = training_data(session, actor=actor, since=since, until=until)
    out = Path(out_dir)
    if not out.parent.is_dir():
        raise ValidationError(f"the folder {out.parent} does not exist")
    blobs = {"approved.jsonl": _jsonl(data.approved), "edits.jsonl": _jsonl(data.edits),
             "terms.jsonl": _jsonl(data.terms), "rejected.jsonl": _jsonl(data.rejected)}
    files = {name: hashlib.sha256(b).hexdigest() for name, b in blobs.items()}
    manifest = {"format": FORMAT, "kind": "training", "counts": data.counts(), "files": files}
    blobs["manifest.json"] = (json.dumps(manifest, indent=1, sort_keys=True) + "\n").encode("utf-8")
    try:
        out.mkdir(exist_ok=True)
        for name, blob in blobs.items():  # each file appears whole: a temporary name, then rename
            tmp = out / f".{name}.{os.getpid()}.tmp"
            tmp.write_bytes(blob)
            os.replace(tmp, out / name)
    except OSError as e:
        raise StorageError(f"cannot write {out}: {e.strerror or e}") from e
    filters: dict[str, Any] = {"kind": "training"}
    if since is not None:
        filters["since"] = since.isoformat()
    if until is not None:
        filters["until"] = until.isoformat()
    resolved = str(out.resolve())
    record = Export(actor_id=by.id, format="json", filters=filters,
                    row_count=sum(data.counts().values()), path=resolved,
                    sha256=hashlib.sha256(blobs["manifest.json"]).hexdigest())
    session.add(record)
    session.flush()
    append_event(session, by.name, by.role, "export", "export", record.id,
                 new={"kind": "training", "counts": data.counts(), "path": resolved, "sha256": record.sha256,
                      "filters": filters})
    return record


def main(argv: list[str] | None = None) -> int:
    """`python -m storage.export training --out DIR --actor NAME [--since] [--until] [--db-url]`."""
    import argparse
    import sys

    from storage.audit import add_db_args
    from storage.db import make_engine, make_session_factory, resolve_url, transaction
    from storage.export import parse_utc
    from storage.migrations import require_current

    p = argparse.ArgumentParser(prog="python -m storage.export training",
                                description="Write QA feedback (approved documents, edit pairs, locked terms, "
                                            "rejected drafts) as the files engine.train --feedback reads. The export "
                                            "is itself recorded as an audit event.")
    p.add_argument("--out", required=True, help="folder to write (created if its parent exists; files replaced)")
    p.add_argument("--actor", default=os.environ.get("DIFFDRAFT_ACTOR"),
                   help="user name of the manager or admin exporting (default: $DIFFDRAFT_ACTOR)")
    p.add_argument("--since", type=parse_utc, help="only documents updated from this UTC date/time (inclusive)")
    p.add_argument("--until", type=parse_utc, help="only documents updated before this UTC date/time")
    add_db_args(p)
    args = p.parse_args(argv)
    if not args.actor:
        p.error("--actor (or $DIFFDRAFT_ACTOR) is required: exports are audited")
    try:
        engine = make_engine(resolve_url(args.db_url, args.data_dir))
        try:
            require_current(engine)
            with transaction(make_session_factory(engine)) as session:
                record = export_training(session, args.out, actor=args.actor, since=args.since, until=args.until)
                path, sha = record.path, record.sha256
        finally:
            engine.dispose()
    except StorageError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    manifest = json.loads((Path(path) / "manifest.json").read_text())
    counts = manifest["counts"]
    print(f"wrote {', '.join(f'{counts[k]} {k}' for k in ('approved', 'edits', 'terms', 'rejected'))} to {path} (manifest sha256 {sha})")
    return 0
