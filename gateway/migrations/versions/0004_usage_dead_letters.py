"""Usage dead letters: records the database refused, kept instead of blocking the writer.

Revision ID: 0004
Revises: 0007
Create Date: 2026-12-03 07:00:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "usage_dead_letters",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("run_id", sa.String(length=64), nullable=True),
        sa.Column("tenant_id", sa.String(length=64), nullable=True),
        sa.Column("reason", sa.String(length=1000), nullable=False),
        sa.Column("record", sa.String(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("usage_dead_letters", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_usage_dead_letters_run_id"), ["run_id"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("usage_dead_letters", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_usage_dead_letters_run_id"))
    op.drop_table("usage_dead_letters")
