"""Monthly partitions of `usage_records` on PostgreSQL, and raw retention.

On PostgreSQL `usage_records` is partitioned by RANGE on `day`, one partition per calendar
month, named `usage_records_YYYY_MM`. A partition must exist before a row of its month is
inserted: the writer creates the partitions of the months it is about to write (once per
month and process, `CREATE TABLE IF NOT EXISTS ... PARTITION OF`), and `gateway usage
maintain` creates the coming months ahead and drops the months past
`GATEWAY_USAGE_RAW_RETENTION_DAYS` (whole partitions: `DROP TABLE`, never a mass `DELETE`).
Rollups are never dropped, so reports of those months still answer; the export of a dropped
month is empty.

SQLite keeps one table: no partitions, and retention is not applied there.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, timedelta

from sqlalchemy import text
from sqlalchemy.exc import DBAPIError, ProgrammingError
from sqlmodel.ext.asyncio.session import AsyncSession

from tenants.models.usage import PARTITION_NAME

PARENT = "usage_records"


def month_start(day: date) -> date:
    return day.replace(day=1)


def next_month(day: date) -> date:
    first = day.replace(day=1)
    return (first + timedelta(days=32)).replace(day=1)


def partition_name(month: date) -> str:
    return f"{PARENT}_{month.year:04d}_{month.month:02d}"


def create_sql(month: date) -> str:
    """DDL of one month's partition (dates are generated here, never user input)."""
    start, end = month_start(month), next_month(month)
    return (
        f"CREATE TABLE IF NOT EXISTS {partition_name(start)} PARTITION OF {PARENT} "
        f"FOR VALUES FROM ('{start.isoformat()}') TO ('{end.isoformat()}')"
    )


def is_partitioned(session: AsyncSession) -> bool:
    return session.get_bind().dialect.name == "postgresql"


async def existing_months(session: AsyncSession) -> list[date]:
    """The months that have a partition, oldest first."""
    rows = await session.exec(  # type: ignore[call-overload]
        text(
            "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
            "JOIN pg_class p ON p.oid = i.inhparent WHERE p.relname = :parent"
        ),
        params={"parent": PARENT},
    )
    months = []
    for (name,) in rows.all():
        match = PARTITION_NAME.match(name)
        if match:
            months.append(date(int(match.group(1)), int(match.group(2)), 1))
    return sorted(months)


async def ensure_months(session: AsyncSession, months: set[date]) -> None:
    """Create the partitions of these months if missing (idempotent; another replica creating
    the same one at the same time is fine). The caller's unit of work commits them."""
    for month in sorted({month_start(m) for m in months}):
        try:
            # A savepoint: losing the race undoes this statement only, not the caller's unit.
            async with session.begin_nested():
                await session.exec(text(create_sql(month)))  # type: ignore[call-overload]
        except (ProgrammingError, DBAPIError):
            # Lost a race with another writer creating it (duplicate table): it exists now.
            if month not in await existing_months(session):
                raise


@dataclass(frozen=True, slots=True)
class Maintenance:
    """What `maintain` did."""

    created: list[str]
    dropped: list[str]
    kept_from: date | None
    """The first day still kept (None: retention off)."""


async def maintain(
    session: AsyncSession, *, today: date, months_ahead: int, retention_days: int | None
) -> Maintenance:
    """Create this month's and the next `months_ahead` months' partitions; drop every
    partition whose whole month is older than `retention_days` (None: keep everything). The
    caller's unit of work commits it all."""
    before = set(await existing_months(session))
    wanted, month = set(), month_start(today)
    for _ in range(months_ahead + 1):
        wanted.add(month)
        month = next_month(month)
    await ensure_months(session, wanted)
    created = [partition_name(m) for m in sorted(wanted - before)]
    dropped: list[str] = []
    kept_from = None
    if retention_days is not None:
        kept_from = today - timedelta(days=retention_days)
        for month in await existing_months(session):
            if next_month(month) <= kept_from:  # every day of it is past retention
                await session.exec(text(f"DROP TABLE {partition_name(month)}"))  # type: ignore[call-overload]
                dropped.append(partition_name(month))
    return Maintenance(created=created, dropped=dropped, kept_from=kept_from)
