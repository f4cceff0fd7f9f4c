"""PostgreSQL monthly partitions of the raw usage records: the migration converts the table
without losing a row, the writer creates a missing month, retention drops whole months and
keeps the rollups, `gateway usage maintain` does both from a shell."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import text

from gateway.core.clock import utcnow
from gateway.core.db import Database
from gateway.core.migrate import downgrade, upgrade
from tenants.models import UsageRecord, UsageRollup
from tenants.price.pricing import PriceBook
from tenants.usage.export import iter_records
from tenants.usage.partitions import existing_months, maintain, next_month
from tenants.usage.repository import UsageRepository, priced
from tenants.usage.rollups import PRIMARY_KEY, rollup_rows
from tests.conftest import _truncate
from tests.tenants.test_admin_usage import add, record


@pytest.fixture
def pg(postgres_url: str) -> str:
    """The session's PostgreSQL database, emptied (partitioning is PostgreSQL's only)."""
    asyncio.run(_truncate(postgres_url))
    return postgres_url


GATEWAY = str(Path(sys.executable).parent / "gateway")
MONTHS = [date(2026, 1, 10), date(2026, 2, 10), date(2026, 3, 10)]


async def _partitioned(db: Database) -> bool:
    async with db.session() as session:
        rows = await session.exec(  # type: ignore[call-overload]
            text(
                "SELECT count(*) FROM pg_partitioned_table p JOIN pg_class c "
                "ON c.oid = p.partrelid WHERE c.relname = 'usage_records'"
            )
        )
        return bool(rows.one()[0])


async def _export(db: Database, start: date, end: date) -> list[dict[str, Any]]:
    return [row async for row in iter_records(db, tenant_id=None, start=start, end=end, after=None)]


async def _reports(db: Database, start: date, end: date) -> list[dict[str, Any]]:
    async with db.session() as session:
        repository = UsageRepository(session)
        return [
            await repository.report(tenant_id=None, group_by=g, start=start, end=end)
            for g in ("tenant", "day", "model", "user")
        ]


def _records() -> list[UsageRecord]:
    return [
        record(tenant, day + timedelta(days=i), user=f"u{i % 3}", model=f"m{i % 2}")
        for tenant in ("ten_a", "ten_b")
        for day in MONTHS
        for i in range(4)
    ]


async def test_migration_converts_the_table_keeping_every_row(pg: str) -> None:
    await asyncio.to_thread(downgrade, pg, "0009a-1")  # just before the partitions
    db = Database(pg)
    try:
        assert not await _partitioned(db)
        rows = [priced(r.model_dump(), PriceBook([])) for r in _records()]
        # The columns of the tables then (`model_usage` came later, in 0010, and the rollups'
        # `unpriced_segments` in 0011).
        old_rows = [{k: v for k, v in row.items() if k != "model_usage"} for row in rows]
        table = UsageRecord.__table__  # type: ignore[attr-defined]
        old_rollups = [
            {k: v for k, v in row.items() if k != "unpriced_segments"} for row in rollup_rows(rows)
        ]
        async with db.session() as session:  # the writer as it was before partitions
            await session.exec(table.insert(), params=old_rows)  # type: ignore[call-overload]
            await session.exec(_old_upsert(), params=old_rollups)  # type: ignore[call-overload]
            await session.commit()
        start, end = date(2026, 1, 1), date(2026, 3, 31)
        # Read through today's model (its later columns added for the reading, as the
        # migrations fill them, then dropped).
        await _later_column(db, "ADD COLUMN model_usage JSON")
        await _later_column(
            db, "ADD COLUMN unpriced_segments BIGINT NOT NULL DEFAULT 0", "usage_rollups"
        )
        await _later_column(db, "SET unpriced_segments = unpriced_runs", "usage_rollups", "UPDATE")
        before_export, before_reports = (
            await _export(db, start, end),
            await _reports(db, start, end),
        )
        await _later_column(db, "DROP COLUMN model_usage")
        await _later_column(db, "DROP COLUMN unpriced_segments", "usage_rollups")
        assert len(before_export) == len(rows)

        await asyncio.to_thread(upgrade, pg)
        # The pool's prepared statements predate the migrations (0014 changes `run_id`'s
        # collation, which invalidates them once): fresh connections, as a restart would.
        await db.engine.dispose()
        assert await _partitioned(db)
        async with db.session() as session:
            months = await existing_months(session)
        assert {date(2026, m, 1) for m in (1, 2, 3)} <= set(months)
        this_month = utcnow().date().replace(day=1)
        assert next_month(next_month(this_month)) in months  # created ahead
        assert await _export(db, start, end) == before_export
        assert await _reports(db, start, end) == before_reports

        # A retried batch is still skipped on the partitioned table (run_id, segment, day).
        again = await _records_again(db, rows)
        assert again == 0
    finally:
        await db.dispose()
        await asyncio.to_thread(upgrade, pg)


async def _later_column(
    db: Database, change: str, table: str = "usage_records", verb: str = "ALTER TABLE"
) -> None:
    async with db.session() as session:
        await session.exec(text(f"{verb} {table} {change}"))  # type: ignore[call-overload]
        await session.commit()


def _old_upsert() -> Any:
    """The rollups' upsert before `unpriced_segments` (0011)."""
    from sqlalchemy.dialects.postgresql import insert

    table = UsageRollup.__table__  # type: ignore[attr-defined]
    statement = insert(table)
    counters = [c.name for c in table.columns if c.name not in PRIMARY_KEY]
    counters.remove("unpriced_segments")
    return statement.on_conflict_do_update(
        index_elements=list(PRIMARY_KEY),
        set_={name: table.c[name] + statement.excluded[name] for name in counters},
    )


async def _records_again(db: Database, rows: list[dict[str, Any]]) -> int:
    async with db.unit() as session:
        return await UsageRepository(session).add_many([UsageRecord(**row) for row in rows[:3]])


async def test_the_writer_creates_a_missing_month(pg: str) -> None:
    db = Database(pg)
    try:
        far = date(2031, 5, 17)
        await add(db, record("ten_far", far))
        async with db.session() as session:
            assert date(2031, 5, 1) in await existing_months(session)
        assert len(await _export(db, far, far)) == 1
    finally:
        await db.dispose()


async def test_a_resumed_runs_segments_in_two_months_are_each_stored_once(pg: str) -> None:
    # A run paused on the last day of a month and resumed on the next: its two segments share
    # the run id, land in two partitions, and a retried batch stores neither again.
    db = Database(pg)
    try:
        first = record("ten_seg", date(2026, 4, 30))
        second = record("ten_seg", date(2026, 5, 1), run_id=first.run_id, segment=1)
        async with db.unit() as session:
            stored = await UsageRepository(session).add_many([first, second])
        async with db.unit() as session:
            again = await UsageRepository(session).add_many([first, second])
        assert (stored, again) == (2, 0)
        exported = await _export(db, date(2026, 4, 1), date(2026, 5, 31))
        assert [(row["run_id"], row["segment"]) for row in exported] == [
            (first.run_id, 0),
            (first.run_id, 1),
        ]
        async with db.session() as session:
            report = await UsageRepository(session).report(
                tenant_id="ten_seg", group_by="day", start=date(2026, 4, 1), end=date(2026, 5, 31)
            )
        assert report["totals"]["runs"] == 1  # one run, two segments
        assert report["totals"]["requests"] == 2
    finally:
        await db.dispose()


async def test_retention_drops_whole_months_and_keeps_rollups(pg: str) -> None:
    db = Database(pg)
    try:
        await add(db, *_records())
        start, end = date(2026, 1, 1), date(2026, 3, 31)
        reports = await _reports(db, start, end)
        # Keep from 2026-02-20: January is wholly past it, February only in part (kept).
        today = date(2026, 2, 20) + timedelta(days=30)
        async with db.unit() as session:
            done = await maintain(session, today=today, months_ahead=1, retention_days=30)
            months = await existing_months(session)
        assert "usage_records_2026_01" in done.dropped
        assert "usage_records_2026_02" not in done.dropped
        assert date(2026, 1, 1) not in months and date(2026, 2, 1) in months
        exported = await _export(db, start, end)
        assert exported and all(row["day"] >= "2026-02-01" for row in exported)
        assert await _reports(db, start, end) == reports  # reports read the rollups: unchanged
        # The writer recreates a dropped month it is handed (a late record).
        await add(db, record("ten_late", date(2026, 1, 15)))
        assert len(await _export(db, date(2026, 1, 15), date(2026, 1, 15))) == 1
    finally:
        await db.dispose()


def test_gateway_usage_maintain(pg: str, tmp_path: Path) -> None:
    env = {
        **os.environ,
        "GATEWAY_DATABASE_URL": pg,
        "GATEWAY_ENV": "development",
        "GATEWAY_USAGE_RAW_RETENTION_DAYS": "400",
        "GATEWAY_USAGE_PARTITIONS_AHEAD": "3",
    }
    # A month past the retention holds a record: the command drops its partition, and says
    # so in the audit log (dropping billing data was the one CLI change left unaudited).
    old_day = utcnow().date().replace(day=1) - timedelta(days=800)
    old_partition = f"usage_records_{old_day:%Y_%m}"

    async def seeded() -> None:
        db = Database(pg)
        try:
            await add(db, record("ten_old", old_day))
        finally:
            await db.dispose()

    asyncio.run(seeded())
    done = subprocess.run(
        [GATEWAY, "usage", "maintain"], env=env, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    out = json.loads(done.stdout)
    assert out["partitioned"] is True
    assert out["kept_from"] == (utcnow().date() - timedelta(days=400)).isoformat()
    assert old_partition in out["dropped"]

    async def audited() -> list[Any]:
        db = Database(pg)
        try:
            async with db.engine.connect() as conn:
                rows = await conn.execute(
                    text("SELECT actor, action, details FROM audit_events WHERE actor = 'cli'")
                )
                return [tuple(row) for row in rows]
        finally:
            await db.dispose()

    events = [(a, action, d) for a, action, d in asyncio.run(audited()) if action == "usage.drop"]
    assert len(events) == 1, events
    details = events[0][2] if isinstance(events[0][2], dict) else json.loads(events[0][2])
    assert old_partition in details["dropped"] and details["kept_from"] == out["kept_from"]
    sqlite_env = {**env, "GATEWAY_DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path / 'm.db'}"}
    assert subprocess.run([GATEWAY, "db", "upgrade"], env=sqlite_env, timeout=60).returncode == 0
    done = subprocess.run(
        [GATEWAY, "usage", "maintain"], env=sqlite_env, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0 and json.loads(done.stdout)["partitioned"] is False
