"""Model prices and the cost of every usage record.

`model_prices` holds one row per price change (never updated). `usage_records` gains
`cost_pico` (exact cost in pico-dollars) and `unpriced`; the rows already there ran while no
price table existed, so they are unpriced at cost 0.

Revision ID: 0008
Revises: 0003
Create Date: 2026-12-03 06:40:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0008"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "model_prices",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("model", sa.String(length=128), nullable=False),
        sa.Column("effective_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("priced", sa.Boolean(), nullable=False),
        sa.Column("input_pico", sa.BigInteger(), nullable=False),
        sa.Column("cached_input_pico", sa.BigInteger(), nullable=True),
        sa.Column("output_pico", sa.BigInteger(), nullable=False),
        sa.Column("reasoning_pico", sa.BigInteger(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index(
        "ix_model_prices_model_effective", "model_prices", ["model", "effective_at"], unique=False
    )
    with op.batch_alter_table("usage_records", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("cost_pico", sa.BigInteger(), nullable=False, server_default="0")
        )
        batch_op.add_column(
            sa.Column("unpriced", sa.Boolean(), nullable=False, server_default=sa.true())
        )


def downgrade() -> None:
    with op.batch_alter_table("usage_records", schema=None) as batch_op:
        batch_op.drop_column("unpriced")
        batch_op.drop_column("cost_pico")
    op.drop_index("ix_model_prices_model_effective", table_name="model_prices")
    op.drop_table("model_prices")
