"""Durable runs: the live state of every run in the database, so that any app process can
rebuild a run after a crash, a restart or an eviction from its cache, and a lease that says which
process is generating it.

steps:      kinds (one ASCII letter per position: why it was held at that step), layout
run_states: run_id (primary key, -> runs.id), version, state (canonical JSON), owner, lease_until,
            updated_at

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-05
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

TS = sa.DateTime(timezone=True)


def upgrade() -> None:
    with op.batch_alter_table("steps") as batch:
        batch.add_column(sa.Column("kinds", sa.LargeBinary(), nullable=True))
        batch.add_column(sa.Column("layout", sa.Integer(), nullable=True))
    op.create_table(
        "run_states",
        sa.Column("run_id", sa.Integer(), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("state", sa.Text(), nullable=False),
        sa.Column("owner", sa.String(128), nullable=True),
        sa.Column("lease_until", TS, nullable=True),
        sa.Column("updated_at", TS, nullable=False),
        sa.ForeignKeyConstraint(["run_id"], ["runs.id"], name="fk_run_states_run_id_runs"),
        sa.PrimaryKeyConstraint("run_id", name="pk_run_states"),
    )
    op.create_index("ix_run_states_owner", "run_states", ["owner"], unique=False)
    op.create_index("ix_run_states_lease_until", "run_states", ["lease_until"], unique=False)


def downgrade() -> None:
    op.drop_index("ix_run_states_lease_until", table_name="run_states")
    op.drop_index("ix_run_states_owner", table_name="run_states")
    op.drop_table("run_states")
    with op.batch_alter_table("steps") as batch:
        batch.drop_column("layout")
        batch.drop_column("kinds")
