"""A resumed run that failed keeps its error (`stored_runs.error`), so `GET /v1/runs/{run_id}`
says why it failed, as the resume's own answer did.

Rows stored before this revision keep `error` null.

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-08 01:30:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0013"
down_revision: str | None = "0012"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("stored_runs", sa.Column("error", sa.JSON(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("stored_runs") as batch:
        batch.drop_column("error")
