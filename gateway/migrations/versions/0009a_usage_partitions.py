"""PostgreSQL: `usage_records` partitioned by month (declarative RANGE partitioning on `day`);
on both databases an index on (tenant_id, run_id) for a tenant's export.

The existing table is converted in one transaction: renamed aside, the partitioned table
created with the same columns (primary key `(run_id, segment, day)`: a partitioned table's
unique keys must hold the partition key; a record keeps its day, so a retried write still
finds its row), one partition per month from the oldest record to two months
ahead, every row copied, the old table dropped. Writers wait on the table's lock meanwhile
(about a minute per few million rows: run it in a quiet hour). A failure rolls everything
back. SQLite keeps one table: nothing changes there.

Revision ID: 0009a
Revises: 0006
Create Date: 2026-12-03 07:00:00
"""

from collections.abc import Sequence
from datetime import UTC, date, datetime, timedelta

import sqlalchemy as sa
from alembic import op

revision: str = "0009a"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

OLD = "usage_records_unpartitioned"
# Every SQL string here is built from these constants and generated dates, never from input.


def _next_month(day: date) -> date:
    return (day.replace(day=1) + timedelta(days=32)).replace(day=1)


def _months(first: date, last: date) -> list[date]:
    months, month = [], first.replace(day=1)
    while month <= last:
        months.append(month)
        month = _next_month(month)
    return months


def upgrade() -> None:
    bind = op.get_bind()
    if bind.dialect.name != "postgresql":
        op.create_index("ix_usage_tenant_run", "usage_records", ["tenant_id", "run_id"])
        return
    op.execute(f"ALTER TABLE usage_records RENAME TO {OLD}")
    op.execute(f"ALTER TABLE {OLD} RENAME CONSTRAINT usage_records_pkey TO {OLD}_pkey")
    op.execute("ALTER INDEX ix_usage_tenant_day RENAME TO ix_usage_tenant_day_unpartitioned")
    op.execute("ALTER INDEX ix_usage_records_day RENAME TO ix_usage_records_day_unpartitioned")
    op.execute(
        f"CREATE TABLE usage_records (LIKE {OLD} INCLUDING DEFAULTS) PARTITION BY RANGE (day)"
    )
    op.execute(
        "ALTER TABLE usage_records ADD CONSTRAINT usage_records_pkey "
        "PRIMARY KEY (run_id, segment, day)"
    )
    op.execute("CREATE INDEX ix_usage_tenant_day ON usage_records (tenant_id, day)")
    op.execute("CREATE INDEX ix_usage_records_day ON usage_records (day)")
    op.execute("CREATE INDEX ix_usage_tenant_run ON usage_records (tenant_id, run_id)")
    oldest, newest = bind.execute(sa.text(f"SELECT min(day), max(day) FROM {OLD}")).one()  # noqa: S608
    today = datetime.now(UTC).date()  # days are UTC days
    first = min(oldest or today, today)
    last = max(newest or today, today)
    for month in _months(first, _next_month(_next_month(last))):
        end = _next_month(month)
        op.execute(
            f"CREATE TABLE usage_records_{month.year:04d}_{month.month:02d} PARTITION OF "
            f"usage_records FOR VALUES FROM ('{month.isoformat()}') TO ('{end.isoformat()}')"
        )
    op.execute(f"INSERT INTO usage_records SELECT * FROM {OLD}")  # noqa: S608
    op.execute(f"DROP TABLE {OLD}")


def downgrade() -> None:
    bind = op.get_bind()
    if bind.dialect.name != "postgresql":
        op.drop_index("ix_usage_tenant_run", table_name="usage_records")
        return
    op.execute(f"CREATE TABLE {OLD} (LIKE usage_records INCLUDING DEFAULTS)")
    op.execute(f"INSERT INTO {OLD} SELECT * FROM usage_records")  # noqa: S608
    op.execute("DROP TABLE usage_records CASCADE")  # the partitions with it
    op.execute(f"ALTER TABLE {OLD} RENAME TO usage_records")
    op.execute(
        "ALTER TABLE usage_records ADD CONSTRAINT usage_records_pkey PRIMARY KEY (run_id, segment)"
    )
    op.execute("CREATE INDEX ix_usage_tenant_day ON usage_records (tenant_id, day)")
    op.execute("CREATE INDEX ix_usage_records_day ON usage_records (day)")
