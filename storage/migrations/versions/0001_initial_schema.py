"""Initial schema: users, templates, documents, runs, steps, pins, edits, reviews, exports,
and the audit chain (audit_events + audit_head) with the triggers that keep it append-only.

Revision ID: 0001
Revises:
Create Date: 2026-11-28
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

GENESIS_HASH = "0" * 64
TS = sa.DateTime(timezone=True)
JSONV = sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql")


def _id() -> sa.Column:
    return sa.Column("id", sa.Integer(), nullable=False)


def _created_at() -> sa.Column:
    return sa.Column("created_at", TS, nullable=False)


def _fk(table: str, column: str, target: str) -> sa.ForeignKeyConstraint:
    return sa.ForeignKeyConstraint([column], [f"{target}.id"], name=f"fk_{table}_{column}_{target}")


def _index(table: str, *columns: str) -> None:
    for column in columns:
        op.create_index(f"ix_{table}_{column}", table, [column], unique=False)


def upgrade() -> None:
    op.create_table(
        "users",
        _id(),
        sa.Column("name", sa.String(64), nullable=False),
        sa.Column("role", sa.String(16), nullable=False),
        sa.Column("password_hash", sa.String(255), nullable=False),
        sa.Column("disabled", sa.Boolean(), nullable=False),
        sa.Column("failed_logins", sa.Integer(), nullable=False),
        sa.Column("last_failed_login_at", TS, nullable=True),
        sa.Column("last_login_at", TS, nullable=True),
        _created_at(),
        sa.CheckConstraint("role IN ('operator', 'reviewer', 'manager', 'admin')", name="ck_users_role"),
        sa.PrimaryKeyConstraint("id", name="pk_users"),
        sa.UniqueConstraint("name", name="uq_users_name"),
    )
    op.create_table(
        "templates",
        _id(),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("body", sa.Text(), nullable=False),
        sa.Column("created_by_id", sa.Integer(), nullable=True),
        _created_at(),
        _fk("templates", "created_by_id", "users"),
        sa.PrimaryKeyConstraint("id", name="pk_templates"),
        sa.UniqueConstraint("name", name="uq_templates_name"),
    )
    op.create_table(
        "documents",
        _id(),
        sa.Column("title", sa.String(200), nullable=False),
        sa.Column("template_id", sa.Integer(), nullable=True),
        sa.Column("text", sa.Text(), nullable=False),
        sa.Column("status", sa.String(24), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("created_by_id", sa.Integer(), nullable=True),
        _created_at(),
        sa.Column("updated_by_id", sa.Integer(), nullable=True),
        sa.Column("updated_at", TS, nullable=False),
        sa.CheckConstraint(
            "status IN ('draft', 'awaiting_review', 'approved', 'rejected', 'discarded')", name="ck_documents_status"
        ),
        _fk("documents", "created_by_id", "users"),
        _fk("documents", "template_id", "templates"),
        _fk("documents", "updated_by_id", "users"),
        sa.PrimaryKeyConstraint("id", name="pk_documents"),
    )
    _index("documents", "status", "template_id")
    op.create_table(
        "runs",
        _id(),
        sa.Column("document_id", sa.Integer(), nullable=False),
        sa.Column("parent_run_id", sa.Integer(), nullable=True),
        sa.Column("parent_step_index", sa.Integer(), nullable=True),
        sa.Column("model_id", sa.String(200), nullable=False),
        sa.Column("model_checksum", sa.String(128), nullable=False),
        sa.Column("seed", sa.BigInteger(), nullable=False),
        sa.Column("sampler_settings", JSONV, nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("started_by_id", sa.Integer(), nullable=True),
        sa.Column("started_at", TS, nullable=False),
        sa.Column("finished_at", TS, nullable=True),
        sa.CheckConstraint("status IN ('running', 'paused', 'finished', 'discarded')", name="ck_runs_status"),
        sa.CheckConstraint("(parent_run_id IS NULL) = (parent_step_index IS NULL)", name="ck_runs_parent"),
        _fk("runs", "document_id", "documents"),
        _fk("runs", "parent_run_id", "runs"),
        _fk("runs", "started_by_id", "users"),
        sa.PrimaryKeyConstraint("id", name="pk_runs"),
    )
    _index("runs", "document_id", "model_id", "parent_run_id")
    op.create_table(
        "steps",
        _id(),
        sa.Column("run_id", sa.Integer(), nullable=False),
        sa.Column("step_index", sa.Integer(), nullable=False),
        sa.Column("t", sa.Float(), nullable=True),
        sa.Column("n_tokens", sa.Integer(), nullable=False),
        sa.Column("token_ids", sa.LargeBinary(), nullable=False),
        sa.Column("confidences", sa.LargeBinary(), nullable=False),
        _created_at(),
        _fk("steps", "run_id", "runs"),
        sa.PrimaryKeyConstraint("id", name="pk_steps"),
        sa.UniqueConstraint("run_id", "step_index", name="uq_steps_run_id_step_index"),
    )
    op.create_table(
        "pins",
        _id(),
        sa.Column("document_id", sa.Integer(), nullable=False),
        sa.Column("run_id", sa.Integer(), nullable=True),
        sa.Column("step_index", sa.Integer(), nullable=True),
        sa.Column("span_start", sa.Integer(), nullable=False),
        sa.Column("span_end", sa.Integer(), nullable=False),
        sa.Column("text", sa.Text(), nullable=False),
        sa.Column("kind", sa.String(8), nullable=False),
        sa.Column("reason", sa.Text(), nullable=True),
        sa.Column("created_by_id", sa.Integer(), nullable=False),
        _created_at(),
        sa.Column("removed_by_id", sa.Integer(), nullable=True),
        sa.Column("removed_at", TS, nullable=True),
        sa.Column("removed_reason", sa.Text(), nullable=True),
        sa.CheckConstraint("kind IN ('token', 'term')", name="ck_pins_kind"),
        sa.CheckConstraint("span_start >= 0 AND span_end > span_start", name="ck_pins_span"),
        _fk("pins", "created_by_id", "users"),
        _fk("pins", "document_id", "documents"),
        _fk("pins", "removed_by_id", "users"),
        _fk("pins", "run_id", "runs"),
        sa.PrimaryKeyConstraint("id", name="pk_pins"),
    )
    _index("pins", "created_at", "created_by_id", "document_id", "run_id")
    op.create_table(
        "edits",
        _id(),
        sa.Column("document_id", sa.Integer(), nullable=False),
        sa.Column("run_id", sa.Integer(), nullable=True),
        sa.Column("step_index", sa.Integer(), nullable=True),
        sa.Column("unit", sa.String(8), nullable=False),
        sa.Column("span_start", sa.Integer(), nullable=False),
        sa.Column("span_end", sa.Integer(), nullable=False),
        sa.Column("old_text", sa.Text(), nullable=False),
        sa.Column("new_text", sa.Text(), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("created_by_id", sa.Integer(), nullable=False),
        _created_at(),
        sa.CheckConstraint("unit IN ('token', 'char')", name="ck_edits_unit"),
        sa.CheckConstraint("span_start >= 0 AND span_end >= span_start", name="ck_edits_span"),
        _fk("edits", "created_by_id", "users"),
        _fk("edits", "document_id", "documents"),
        _fk("edits", "run_id", "runs"),
        sa.PrimaryKeyConstraint("id", name="pk_edits"),
    )
    _index("edits", "created_at", "created_by_id", "document_id", "run_id")
    op.create_table(
        "reviews",
        _id(),
        sa.Column("document_id", sa.Integer(), nullable=False),
        sa.Column("document_version", sa.Integer(), nullable=False),
        sa.Column("decision", sa.String(8), nullable=False),
        sa.Column("reason", sa.Text(), nullable=True),
        sa.Column("reviewer_id", sa.Integer(), nullable=False),
        _created_at(),
        sa.CheckConstraint("decision IN ('approve', 'reject')", name="ck_reviews_decision"),
        _fk("reviews", "document_id", "documents"),
        _fk("reviews", "reviewer_id", "users"),
        sa.PrimaryKeyConstraint("id", name="pk_reviews"),
    )
    _index("reviews", "document_id")
    op.create_table(
        "exports",
        _id(),
        sa.Column("actor_id", sa.Integer(), nullable=False),
        sa.Column("format", sa.String(8), nullable=False),
        sa.Column("filters", JSONV, nullable=False),
        sa.Column("row_count", sa.Integer(), nullable=False),
        sa.Column("path", sa.Text(), nullable=False),
        sa.Column("sha256", sa.String(64), nullable=False),
        _created_at(),
        sa.CheckConstraint("format IN ('csv', 'xlsx', 'parquet', 'json')", name="ck_exports_format"),
        _fk("exports", "actor_id", "users"),
        sa.PrimaryKeyConstraint("id", name="pk_exports"),
    )
    op.create_table(
        "audit_events",
        sa.Column("seq", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("ts", TS, nullable=False),
        sa.Column("actor", sa.String(64), nullable=False),
        sa.Column("role", sa.String(16), nullable=False),
        sa.Column("action", sa.String(64), nullable=False),
        sa.Column("object_type", sa.String(32), nullable=False),
        sa.Column("object_id", sa.String(64), nullable=False),
        sa.Column("document_id", sa.Integer(), nullable=True),
        sa.Column("template_id", sa.Integer(), nullable=True),
        sa.Column("old_value", sa.Text(), nullable=True),
        sa.Column("new_value", sa.Text(), nullable=True),
        sa.Column("reason", sa.Text(), nullable=True),
        sa.Column("settings", sa.Text(), nullable=True),
        sa.Column("prev_hash", sa.String(64), nullable=False),
        sa.Column("hash", sa.String(64), nullable=False),
        sa.PrimaryKeyConstraint("seq", name="pk_audit_events"),
        sa.UniqueConstraint("hash", name="uq_audit_events_hash"),
    )
    _index("audit_events", "action", "actor", "document_id", "template_id", "ts")
    op.create_table(
        "audit_head",
        sa.Column("id", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("seq", sa.Integer(), nullable=False),
        sa.Column("hash", sa.String(64), nullable=False),
        sa.CheckConstraint("id = 1", name="ck_audit_head_single_row"),
        sa.PrimaryKeyConstraint("id", name="pk_audit_head"),
    )
    op.execute(f"INSERT INTO audit_head (id, seq, hash) VALUES (1, 0, '{GENESIS_HASH}')")
    for statement in (_SQLITE_TRIGGERS if op.get_bind().dialect.name == "sqlite" else _POSTGRES_TRIGGERS):
        op.execute(statement)


# The chain's guards. The word "append-only" in each message is what storage.db recognises.
_SQLITE_TRIGGERS = (
    """CREATE TRIGGER audit_events_no_update BEFORE UPDATE ON audit_events
       BEGIN SELECT RAISE(ABORT, 'audit_events is append-only: UPDATE refused'); END""",
    """CREATE TRIGGER audit_events_no_delete BEFORE DELETE ON audit_events
       BEGIN SELECT RAISE(ABORT, 'audit_events is append-only: DELETE refused'); END""",
    """CREATE TRIGGER audit_head_no_delete BEFORE DELETE ON audit_head
       BEGIN SELECT RAISE(ABORT, 'audit_head is append-only: DELETE refused'); END""",
    """CREATE TRIGGER audit_head_forward_only BEFORE UPDATE ON audit_head
       WHEN NEW.id IS NOT OLD.id OR NEW.seq IS NOT OLD.seq + 1 OR NOT EXISTS
            (SELECT 1 FROM audit_events e WHERE e.seq = NEW.seq AND e.hash = NEW.hash)
       BEGIN SELECT RAISE(ABORT, 'audit_head is append-only: it may only advance to the next stored event'); END""",
)

_POSTGRES_TRIGGERS = (
    """CREATE FUNCTION audit_refuse_change() RETURNS trigger LANGUAGE plpgsql AS $$
       BEGIN
         RAISE EXCEPTION '% is append-only: % refused', TG_TABLE_NAME, TG_OP;
       END $$""",
    """CREATE FUNCTION audit_head_forward_only() RETURNS trigger LANGUAGE plpgsql
       SET search_path FROM CURRENT AS $$
       BEGIN
         IF NEW.id <> OLD.id OR NEW.seq <> OLD.seq + 1 OR NOT EXISTS
            (SELECT 1 FROM audit_events e WHERE e.seq = NEW.seq AND e.hash = NEW.hash) THEN
           RAISE EXCEPTION 'audit_head is append-only: it may only advance to the next stored event';
         END IF;
         RETURN NEW;
       END $$""",
    """CREATE TRIGGER audit_events_no_change BEFORE UPDATE OR DELETE ON audit_events
       FOR EACH ROW EXECUTE FUNCTION audit_refuse_change()""",
    """CREATE TRIGGER audit_events_no_truncate BEFORE TRUNCATE ON audit_events
       FOR EACH STATEMENT EXECUTE FUNCTION audit_refuse_change()""",
    """CREATE TRIGGER audit_head_no_delete BEFORE DELETE ON audit_head
       FOR EACH ROW EXECUTE FUNCTION audit_refuse_change()""",
    """CREATE TRIGGER audit_head_no_truncate BEFORE TRUNCATE ON audit_head
       FOR EACH STATEMENT EXECUTE FUNCTION audit_refuse_change()""",
    """CREATE TRIGGER audit_head_forward_only BEFORE UPDATE ON audit_head
       FOR EACH ROW EXECUTE FUNCTION audit_head_forward_only()""",
)


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("DROP TABLE audit_head")
        op.execute("DROP TABLE audit_events")
        op.execute("DROP FUNCTION audit_head_forward_only()")
        op.execute("DROP FUNCTION audit_refuse_change()")
    else:
        op.drop_table("audit_head")
        op.drop_table("audit_events")
    for table in ("exports", "reviews", "edits", "pins", "steps", "runs", "documents", "templates", "users"):
        op.drop_table(table)
