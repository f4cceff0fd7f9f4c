"""Paused runs remember the version of every agent of their graph (`stored_runs.graph`), so a
run paused inside a handoff target resumes on the target version it paused on, and deleting a
target cancels the runs waiting in it.

Rows stored before this revision keep `graph` null and resume as before (the targets' active
versions).

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-07 22:20:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0012"
down_revision: str | None = "0011"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("stored_runs", sa.Column("graph", sa.JSON(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("stored_runs") as batch:
        batch.drop_column("graph")
