"""Usage record status up to 32 characters (`guardrail_triggered` is 19).

Revision ID: 0007
Revises: 0009
Create Date: 2026-12-03 06:30:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0007"
down_revision: str | None = "0009"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("usage_records") as batch:
        batch.alter_column("status", existing_type=sa.String(length=16), type_=sa.String(length=32))


def downgrade() -> None:
    with op.batch_alter_table("usage_records") as batch:
        batch.alter_column("status", existing_type=sa.String(length=32), type_=sa.String(length=16))
