"""Audit trail and QA feedback as pandas frames and files (CSV, XLSX, Parquet, JSON). With
storage/reports.py, one of the two modules in storage/ that import pandas.

Glossary
  frame        one row per audit event, columns AUDIT_COLUMNS, dtypes AUDIT_DTYPES
  neutralise   a text cell that begins with = + - @ tab or carriage return gets a leading
               apostrophe, so a spreadsheet shows it as text and never runs it as a formula.
               Applied to every format, so all four files hold the same values.
  export       writing a filtered frame to a file; recorded in `exports` and as an audit event

    python -m storage.export --format csv --out FILE --actor NAME [filters]
    python -m storage.export training --out DIR --actor NAME   (storage.training_export)
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import os
import re
import secrets
import sys
from collections.abc import Sequence
from dataclasses import asdict
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pandas as pd
from sqlalchemy import select
from sqlalchemy.orm import Session

from storage import validate
from storage.audit import AuditFilter, add_db_args, append_event, filtered, format_ts
from storage.errors import StorageError, ValidationError
from storage.models import EXPORT_FORMATS, AuditEvent, Export, User
from storage.repository import edit_pairs, feedback_counts, require

AUDIT_COLUMNS: tuple[str, ...] = (
    "seq", "ts", "actor", "role", "action", "object_type", "object_id", "document_id", "template_id",
    "old_value", "new_value", "reason", "settings", "prev_hash", "hash",
)
AUDIT_DTYPES: dict[str, str] = {c: "string" for c in AUDIT_COLUMNS} | {
    "seq": "int64", "document_id": "Int64", "template_id": "Int64",
}
FORMULA_PREFIXES: tuple[str, ...] = ("=", "+", "-", "@", "\t", "\r")
XLSX_MAX_CELL = 32_767  # Excel's limit on characters in one cell
EXTENSIONS = {".csv": "csv", ".xlsx": "xlsx", ".parquet": "parquet", ".json": "json"}


def neutralise(value: Any) -> Any:
    """'=1+1' -> "'=1+1"; anything that is not such a string comes back unchanged."""
    if isinstance(value, str) and value.startswith(FORMULA_PREFIXES):
        return "'" + value
    return value


def neutralise_frame(df: pd.DataFrame) -> pd.DataFrame:
    out = df.copy()
    for col in out.columns:
        if not (pd.api.types.is_numeric_dtype(out[col]) or pd.api.types.is_bool_dtype(out[col])):
            out[col] = out[col].map(neutralise, na_action="ignore")
    return out


def audit_frame(session: Session, filters: AuditFilter | None = None) -> pd.DataFrame:
    """The filtered audit trail, oldest first, neutralised, with AUDIT_DTYPES."""
    rows = []
    for ev in session.scalars(filtered(filters).order_by(AuditEvent.seq).execution_options(yield_per=2_000)):
        row = {c: getattr(ev, c) for c in AUDIT_COLUMNS}
        row["ts"] = format_ts(ev.ts)
        rows.append(row)
    df = pd.DataFrame(rows, columns=list(AUDIT_COLUMNS))
    return neutralise_frame(df).astype(AUDIT_DTYPES)


def feedback_frame(session: Session, by: str, **kwargs: Any) -> pd.DataFrame:
    """QA feedback counts (repository.feedback_counts) as a frame: key, pins, edits, total."""
    rows = [{"key": r.key, "pins": r.pins, "edits": r.edits, "total": r.total}
            for r in feedback_counts(session, by, **kwargs)]  # type: ignore[arg-type]
    df = pd.DataFrame(rows, columns=["key", "pins", "edits", "total"])
    return neutralise_frame(df).astype({"key": "string", "pins": "int64", "edits": "int64", "total": "int64"})


def edit_pairs_frame(session: Session, **kwargs: Any) -> pd.DataFrame:
    """Every edit as (old_text -> new_text) with template, model and user: training data."""
    rows = [asdict(p) | {"created_at": format_ts(p.created_at)} for p in edit_pairs(session, **kwargs)]
    return neutralise_frame(pd.DataFrame(rows))


def format_for(path: str | os.PathLike[str], fmt: str | None) -> str:
    """The explicit format, else the one the file's extension names."""
    if fmt is None:
        fmt = EXTENSIONS.get(Path(path).suffix.lower())
        if fmt is None:
            raise ValidationError(f"cannot tell the format of {path}: give one of {', '.join(EXPORT_FORMATS)}")
    if fmt not in EXPORT_FORMATS:
        raise ValidationError(f"unknown export format {fmt!r}: choose one of {', '.join(EXPORT_FORMATS)}")
    return fmt


def write_frame(df: pd.DataFrame, path: str | os.PathLike[str], fmt: str) -> None:
    """Write atomically (a temporary file beside the target, then rename)."""
    tmp = _write_tmp(df, Path(path), fmt)
    try:
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def _write_tmp(df: pd.DataFrame, path: Path, fmt: str) -> Path:
    """Write to a temporary file beside `path` and return its name."""
    if not path.parent.is_dir():
        raise ValidationError(f"the folder {path.parent} does not exist")
    # a short name of its own: the target's name may already be as long as a name can be
    tmp = path.parent / f".export-{os.getpid()}-{secrets.token_hex(4)}.tmp"
    try:
        if fmt == "csv":
            # every field quoted: pandas leaves a lone carriage return unquoted otherwise, which
            # splits the row on reading; the BOM tells Excel the file is UTF-8
            df.to_csv(tmp, index=False, encoding="utf-8-sig", quoting=csv.QUOTE_ALL)
        elif fmt == "xlsx":
            _xlsx_safe(df).to_excel(tmp, index=False, engine="openpyxl", sheet_name="audit")
        elif fmt == "parquet":
            df.to_parquet(tmp, index=False, engine="pyarrow")
        elif fmt == "json":
            df.to_json(tmp, orient="records", force_ascii=False, indent=1)
        else:
            raise ValidationError(f"unknown export format {fmt!r}")
    except OSError as e:
        tmp.unlink(missing_ok=True)
        raise StorageError(f"cannot write {path}: {e.strerror or e}") from e
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return tmp


def _xlsx_safe(df: pd.DataFrame) -> pd.DataFrame:
    """Control characters Excel refuses become U+FFFD; cells over Excel's limit are cut short."""
    from openpyxl.cell.cell import ILLEGAL_CHARACTERS_RE

    def fix(value: Any) -> Any:
        if not isinstance(value, str):
            return value
        value = ILLEGAL_CHARACTERS_RE.sub("\ufffd", value)
        return value if len(value) <= XLSX_MAX_CELL else value[: XLSX_MAX_CELL - 13] + " [truncated]"

    out = df.copy()
    for col in out.columns:
        if not pd.api.types.is_numeric_dtype(out[col]):
            out[col] = out[col].map(fix, na_action="ignore")
    return out


def read_frame(path: str | os.PathLike[str], fmt: str | None = None,
               dtypes: dict[str, str] | None = None) -> pd.DataFrame:
    """Read an export back with the dtypes it was written with (AUDIT_DTYPES by default)."""
    fmt = format_for(path, fmt)
    dtypes = AUDIT_DTYPES if dtypes is None else dtypes
    na = {"keep_default_na": False, "na_values": [""]}  # "NA", "null" ... are text, only empty is missing
    if fmt == "csv":
        df = pd.read_csv(path, dtype=dtypes, encoding="utf-8-sig", **na)
    elif fmt == "xlsx":
        df = pd.read_excel(path, dtype=dtypes, engine="openpyxl", **na)
    elif fmt == "parquet":
        df = pd.read_parquet(path, engine="pyarrow")
    else:
        df = pd.read_json(path, orient="records", dtype=False)
        if df.empty:
            df = pd.DataFrame(columns=list(dtypes))
    return df.astype(dtypes)


def file_sha256(path: str | os.PathLike[str]) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def export_audit(session: Session, path: str | os.PathLike[str], fmt: str | None = None, *, actor: str,
                 filters: AuditFilter | None = None) -> Export:
    """Write the filtered trail to `path` and record the export (row + audit event) in the caller's
    transaction. If the caller then fails to commit, it should delete the file."""
    by = require(session, actor, "export")
    assert by is not None
    target = validate.output_path(path)
    fmt = format_for(target, fmt)
    filters = filters or AuditFilter()
    df = audit_frame(session, filters)
    tmp = _write_tmp(df, target, fmt)
    try:
        resolved = str(target.resolve())
        record = Export(actor_id=by.id, format=fmt, filters=filters.as_dict(), row_count=len(df), path=resolved,
                        sha256=file_sha256(tmp))
        session.add(record)
        session.flush()
        append_event(session, by.name, by.role, "export", "export", record.id, document_id=filters.document_id,
                     template_id=filters.template_id,
                     new={"format": fmt, "rows": len(df), "path": resolved, "sha256": record.sha256,
                          "filters": record.filters})
        os.replace(tmp, target)  # the file appears only once its record is in the transaction
    finally:
        tmp.unlink(missing_ok=True)
    return record


def find_export(session: Session, export_id: int) -> tuple[Export, str] | None:
    """An export row and the name of the user who made it; None if there is no such export."""
    row = session.execute(select(Export, User.name).join(User, User.id == Export.actor_id)
                          .where(Export.id == export_id)).first()
    return (row[0], row[1]) if row is not None else None


# ---------------------------------------------------------------- CLI


def parse_utc(value: str) -> datetime:
    """ISO date or date-time; without an offset it is taken as UTC."""
    try:
        ts = datetime.fromisoformat(value)
        return ts.replace(tzinfo=timezone.utc) if ts.tzinfo is None else ts.astimezone(timezone.utc)
    except (ValueError, OverflowError):  # OverflowError: an offset that moves it past year 1 or 9999
        raise argparse.ArgumentTypeError(f"not an ISO date or date-time from year 1 to 9999 (UTC): {value!r}") from None


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["training"]:  # QA feedback as training files (storage.training_export)
        from storage.training_export import main as training_main

        return training_main(argv[1:])
    from storage.cli import Parser, fail
    from storage.db import make_engine, make_session_factory, resolve_url, transaction
    from storage.migrations import require_current
    from storage.repository import get_template_by_name

    p = Parser(prog="python -m storage.export",
                                description="Export the audit trail (filtered) to a file. The export is "
                                            "itself recorded as an audit event.")
    p.add_argument("--format", choices=EXPORT_FORMATS, default=None,
                   help="file format (default: from the extension of --out)")
    p.add_argument("--out", required=True, help="file to write (replaced if it exists)")
    p.add_argument("--actor", default=os.environ.get("DIFFDRAFT_ACTOR"),
                   help="user name of the manager or admin exporting (default: $DIFFDRAFT_ACTOR)")
    p.add_argument("--user", help="only events by this user")
    p.add_argument("--role", help="only events by users acting in this role")
    p.add_argument("--action", help="only this action, e.g. edit, review.reject, export")
    p.add_argument("--document", type=int, help="only events about this document id")
    p.add_argument("--template", help="only events about this template (id or name)")
    p.add_argument("--since", type=parse_utc, help="from this UTC date/time (inclusive)")
    p.add_argument("--until", type=parse_utc, help="up to this UTC date/time (exclusive)")
    add_db_args(p)
    args = p.parse_args(argv)
    if not args.actor:
        p.error("--actor (or $DIFFDRAFT_ACTOR) is required: exports are audited")
    record: Export | None = None
    try:
        if args.role is not None:
            validate.role(args.role)
        engine = make_engine(resolve_url(args.db_url, args.data_dir))
        try:
            require_current(engine)
            with transaction(make_session_factory(engine)) as session:
                template_id = None
                if args.template is not None:
                    template_id = (int(args.template) if re.fullmatch(r"[0-9]{1,19}", args.template)
                                   else get_template_by_name(session, args.template).id)
                filters = AuditFilter(user=args.user, role=args.role, action=args.action, document_id=args.document,
                                      template_id=template_id, since=args.since, until=args.until)
                record = export_audit(session, args.out, args.format, actor=args.actor, filters=filters)
        except BaseException:
            if record is not None:  # written, but the commit failed: no file without its audit event
                Path(record.path).unlink(missing_ok=True)
            raise
        finally:
            engine.dispose()
    except StorageError as e:
        return fail(str(e))
    assert record is not None
    print(f"wrote {record.row_count} events to {record.path} ({record.format}, sha256 {record.sha256})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
