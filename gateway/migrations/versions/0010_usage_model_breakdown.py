"""Usage records gain `model_usage`: the per-model breakdown of a run that called more than
its own model (a handoff target or an input classifier on another model), each model priced
at its own price. Nullable, no default: adding it rewrites no row (on PostgreSQL the
partitioned table passes the column to every partition).

Revision ID: 0010
Revises: 0009a
Create Date: 2026-12-06 19:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0010"
down_revision: str | None = "0009a"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("usage_records", sa.Column("model_usage", sa.JSON(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("usage_records") as batch:
        batch.drop_column("model_usage")
