"""Usage rollups gain `unpriced_segments`: the records of the row (any segment of a run, each
share of a run that called several models) that had no price. A report row's `unpriced` flag
reads it, so a row holding only the resumed segment of an unpriced run (approved by another
key, or resumed on another day) is flagged too; `unpriced_runs` counts a run once, where it
started, as before.

Existing rows start from their `unpriced_runs`: rows that held only later segments stay
unflagged for the days before this revision (the raw records keep the truth).

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-07 19:40:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0011"
down_revision: str | None = "0010"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column(
        "usage_rollups",
        sa.Column("unpriced_segments", sa.BigInteger(), nullable=False, server_default="0"),
    )
    op.execute("UPDATE usage_rollups SET unpriced_segments = unpriced_runs")


def downgrade() -> None:
    with op.batch_alter_table("usage_rollups") as batch:
        batch.drop_column("unpriced_segments")
