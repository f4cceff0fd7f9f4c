"""Usage rollups, backfilled from the usage records already stored.

`usage_rollups` holds the counters of the usage records per (tenant, dimension, UTC day,
value), dimensions `day`, `agent`, `model`, `key`, `user`; the writer adds each batch to it in
the batch's transaction, and the reports read it only. The backfill sums the existing records
with one `INSERT ... SELECT ... GROUP BY` per dimension (a full scan of `usage_records`: on a
large table run it in a quiet hour; writers may keep running, their batches wait for the
table's lock and are added after).

Revision ID: 0009
Revises: 0005
Create Date: 2026-12-03 06:30:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0009"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

COUNTERS = (
    "runs",
    "requests",
    "input_tokens",
    "output_tokens",
    "cached_tokens",
    "reasoning_tokens",
    "total_tokens",
    "cost_pico",
    "unpriced_runs",
)
SUMMED = COUNTERS[1:-1]


def upgrade() -> None:
    op.create_table(
        "usage_rollups",
        sa.Column("tenant_id", sa.String(length=40), nullable=False),
        sa.Column("dimension", sa.String(length=8), nullable=False),
        sa.Column("day", sa.Date(), nullable=False),
        sa.Column("value", sa.String(length=256), nullable=False),
        *(sa.Column(name, sa.BigInteger(), nullable=False) for name in COUNTERS),
        sa.PrimaryKeyConstraint("tenant_id", "dimension", "day", "value"),
    )
    op.create_index("ix_usage_rollups_dimension_day", "usage_rollups", ["dimension", "day"])
    backfill()


def backfill() -> None:
    """Sum every stored usage record into the rollups, one statement per dimension."""
    records = sa.table(
        "usage_records",
        *(
            sa.column(name)
            for name in (
                "tenant_id",
                "day",
                "agent",
                "model",
                "key_id",
                "user",
                "unpriced",
                *SUMMED,
            )
        ),
    )
    rollups = sa.table(
        "usage_rollups",
        *(sa.column(n) for n in ("tenant_id", "dimension", "day", "value", *COUNTERS)),
    )
    values = {
        "day": sa.literal_column("''"),
        "agent": records.c.agent,
        "model": records.c.model,
        "key": sa.func.coalesce(records.c.key_id, sa.literal_column("''")),
        "user": sa.func.coalesce(records.c.user, sa.literal_column("''")),
    }
    for dimension, value in values.items():
        select = sa.select(
            records.c.tenant_id,
            sa.literal_column(f"'{dimension}'"),
            records.c.day,
            value,
            sa.func.count(),
            *(sa.func.coalesce(sa.func.sum(records.c[name]), 0) for name in SUMMED),
            sa.func.sum(sa.case((records.c.unpriced, 1), else_=0)),
        )
        # PostgreSQL refuses a constant in GROUP BY: the day dimension groups by the day only.
        keys = [records.c.tenant_id, records.c.day] + ([] if dimension == "day" else [value])
        select = select.group_by(*keys)
        op.execute(
            rollups.insert().from_select(
                ["tenant_id", "dimension", "day", "value", *COUNTERS], select
            )
        )


def downgrade() -> None:
    op.drop_index("ix_usage_rollups_dimension_day", table_name="usage_rollups")
    op.drop_table("usage_rollups")
