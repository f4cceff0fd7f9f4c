"""Paused runs: the stored_runs table, and usage records keyed by (run_id, segment) so a
resumed run records each segment under its run id.

Revision ID: 0006
Revises: 0004
Create Date: 2026-12-03 07:00:00
"""

import warnings
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "stored_runs",
        sa.Column("id", sa.String(length=40), nullable=False),
        sa.Column("tenant_id", sa.String(length=40), nullable=False),
        sa.Column("user", sa.String(length=256), nullable=True),
        sa.Column("agent", sa.String(length=64), nullable=False),
        sa.Column("agent_version", sa.Integer(), nullable=False),
        sa.Column("model", sa.String(length=128), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("state", sa.Text(), nullable=True),
        sa.Column("pending", sa.JSON(), nullable=True),
        sa.Column("conversation_id", sa.String(length=40), nullable=True),
        sa.Column("history_items", sa.Integer(), nullable=False),
        sa.Column("output", sa.JSON(), nullable=True),
        sa.Column("usage", sa.JSON(), nullable=True),
        sa.Column("segments", sa.Integer(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(["tenant_id"], ["tenants.id"]),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("stored_runs", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_stored_runs_tenant_id"), ["tenant_id"], unique=False)
        batch_op.create_index(
            batch_op.f("ix_stored_runs_conversation_id"), ["conversation_id"], unique=False
        )
        batch_op.create_index(batch_op.f("ix_stored_runs_expires_at"), ["expires_at"], unique=False)
    bind = op.get_bind()
    if bind.dialect.name == "postgresql":
        op.add_column(
            "usage_records",
            sa.Column("segment", sa.Integer(), nullable=False, server_default="0"),
        )
        op.drop_constraint("usage_records_pkey", "usage_records", type_="primary")
        op.create_primary_key("usage_records_pkey", "usage_records", ["run_id", "segment"])
    else:
        # SQLite: the table is copied with the new key. SQLAlchemy warns that the reflected
        # key (run_id) differs from the one asked for, then uses the one asked for.
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", sa.exc.SAWarning)
            with op.batch_alter_table("usage_records", recreate="always") as batch_op:
                batch_op.add_column(
                    sa.Column("segment", sa.Integer(), nullable=False, server_default="0")
                )
                batch_op.create_primary_key("usage_records_pkey", ["run_id", "segment"])


def downgrade() -> None:
    bind = op.get_bind()
    op.execute("DELETE FROM usage_records WHERE segment > 0")
    if bind.dialect.name == "postgresql":
        op.drop_constraint("usage_records_pkey", "usage_records", type_="primary")
        op.create_primary_key("usage_records_pkey", "usage_records", ["run_id"])
        op.drop_column("usage_records", "segment")
    else:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", sa.exc.SAWarning)
            with op.batch_alter_table("usage_records", recreate="always") as batch_op:
                batch_op.drop_column("segment")
                batch_op.create_primary_key("usage_records_pkey", ["run_id"])
    with op.batch_alter_table("stored_runs", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_stored_runs_expires_at"))
        batch_op.drop_index(batch_op.f("ix_stored_runs_conversation_id"))
        batch_op.drop_index(batch_op.f("ix_stored_runs_tenant_id"))
    op.drop_table("stored_runs")
