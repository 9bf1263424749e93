"""Pin history (moved pins, the step a pin was removed at, pins made by edits), the token count of
token edits, and electronic signatures on reviews.

pins:    kind may be 'edit'; removed_step_index; supersedes_pin_id (-> pins.id); edit_id (-> edits.id)
edits:   new_n_tokens
reviews: signature_meaning, signed_by, signed_at, signature_method (NULL on older reviews)

SQLite: batch mode (the pins table is copied, since SQLite cannot change a CHECK constraint or add
a foreign key in place).

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-02
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

TS = sa.DateTime(timezone=True)


def upgrade() -> None:
    with op.batch_alter_table("edits") as batch:
        batch.add_column(sa.Column("new_n_tokens", sa.Integer(), nullable=True))
    with op.batch_alter_table("pins", recreate="auto") as batch:
        batch.drop_constraint("ck_pins_kind", type_="check")
        batch.create_check_constraint("ck_pins_kind", sa.text("kind IN ('token', 'term', 'edit')"))
        batch.add_column(sa.Column("removed_step_index", sa.Integer(), nullable=True))
        batch.add_column(sa.Column("supersedes_pin_id", sa.Integer(), nullable=True))
        batch.add_column(sa.Column("edit_id", sa.Integer(), nullable=True))
        batch.create_foreign_key("fk_pins_supersedes_pin_id_pins", "pins", ["supersedes_pin_id"], ["id"])
        batch.create_foreign_key("fk_pins_edit_id_edits", "edits", ["edit_id"], ["id"])
        batch.create_index("ix_pins_supersedes_pin_id", ["supersedes_pin_id"], unique=False)
    with op.batch_alter_table("reviews") as batch:
        batch.add_column(sa.Column("signature_meaning", sa.Text(), nullable=True))
        batch.add_column(sa.Column("signed_by", sa.String(64), nullable=True))
        batch.add_column(sa.Column("signed_at", TS, nullable=True))
        batch.add_column(sa.Column("signature_method", sa.String(64), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("reviews") as batch:
        for column in ("signature_method", "signed_at", "signed_by", "signature_meaning"):
            batch.drop_column(column)
    op.execute("DELETE FROM pins WHERE kind = 'edit' OR supersedes_pin_id IS NOT NULL")
    with op.batch_alter_table("pins", recreate="auto") as batch:
        batch.drop_index("ix_pins_supersedes_pin_id")
        batch.drop_constraint("fk_pins_edit_id_edits", type_="foreignkey")
        batch.drop_constraint("fk_pins_supersedes_pin_id_pins", type_="foreignkey")
        batch.drop_column("edit_id")
        batch.drop_column("supersedes_pin_id")
        batch.drop_column("removed_step_index")
        batch.drop_constraint("ck_pins_kind", type_="check")
        batch.create_check_constraint("ck_pins_kind", sa.text("kind IN ('token', 'term')"))
    with op.batch_alter_table("edits") as batch:
        batch.drop_column("new_n_tokens")
