"""The write-behind usage writer loses nothing: DB outages are retried, shutdown flushes."""

from __future__ import annotations

import asyncio
import time
from datetime import date
from pathlib import Path

import pytest
from prometheus_client import REGISTRY
from sqlalchemy import text

from gateway.core.db import Database
from gateway.core.ids import new_id
from gateway.usage.recorder import UsageQueueFullError, UsageRecorder
from tenants.models import Tenant, UsageRecord
from tests.waiting import eventually


def record(tenant_id: str, tokens: int) -> UsageRecord:
    return UsageRecord(
        run_id=new_id("run"),
        tenant_id=tenant_id,
        agent="a",
        model="m",
        requests=1,
        input_tokens=tokens,
        output_tokens=1,
        total_tokens=tokens + 1,
        status="completed",
        day=date.today(),
    )


def _write_failures() -> float:
    return REGISTRY.get_sample_value("gateway_usage_write_failures_total") or 0.0


async def _count_is(db: Database, expected: int) -> bool:
    return await _count(db) == expected


async def _count(db: Database) -> int:
    async with db.engine.connect() as conn:
        return int((await conn.execute(text("SELECT count(*) FROM usage_records"))).scalar_one())


async def test_records_survive_a_database_outage_and_shutdown(database_url: str) -> None:
    db = Database(database_url)
    async with db.session() as session:
        session.add(Tenant(id="ten_x", slug="x-tenant", name="x"))
        await session.commit()
    recorder = UsageRecorder(db, batch_size=10, flush_interval_s=0.02, max_queue=1000)
    recorder.start()
    try:
        for i in range(25):
            recorder.record(record("ten_x", i))
        await eventually(lambda: _count_is(db, 25), what="25 records written")

        # The table disappears (the DB is "down" for writes) while runs keep finishing.
        async with db.engine.begin() as conn:
            await conn.execute(text("ALTER TABLE usage_records RENAME TO usage_records_away"))
        failures = _write_failures()
        for i in range(30):
            recorder.record(record("ten_x", i))
        await eventually(lambda: _write_failures() > failures, what="a failed batch write")
        assert recorder.depth == 30
        async with db.engine.begin() as conn:
            await conn.execute(text("ALTER TABLE usage_records_away RENAME TO usage_records"))
        for i in range(5):
            recorder.record(record("ten_x", i))
    finally:
        await recorder.close()
    assert await _count(db) == 60
    assert recorder.depth == 0
    await db.dispose()


async def test_a_full_queue_stays_bounded_spills_and_refuses_new_runs_in_time(
    database_url: str, tmp_path: Path
) -> None:
    """While the database is down the queue fills: it never holds more than its maximum
    (the overflow goes to the spill file), new runs wait at most `room_timeout_s` for room
    (then 503 with Retry-After), and once the database is back everything is written."""
    db = Database(database_url)
    spill = tmp_path / "spill.ndjson"
    recorder = UsageRecorder(
        db,
        batch_size=10,
        flush_interval_s=0.02,
        max_queue=5,
        spill_path=str(spill),
        room_timeout_s=0.3,
    )
    async with db.engine.begin() as conn:
        await conn.execute(text("ALTER TABLE usage_records RENAME TO usage_records_away"))
    recorder.start()
    try:
        for i in range(8):
            recorder.record(record("ten_x", i))
        assert recorder.depth == 5
        assert len(spill.read_text().splitlines()) == 3
        started = time.monotonic()
        with pytest.raises(UsageQueueFullError) as refused:
            await recorder.wait_for_room()
        assert 0.25 <= time.monotonic() - started < 2
        assert refused.value.status_code == 503
        assert int(refused.value.headers["Retry-After"]) >= 1
        async with db.engine.begin() as conn:
            await conn.execute(text("ALTER TABLE usage_records_away RENAME TO usage_records"))
        await eventually(lambda: _count_is(db, 8), timeout=15, what="the 8 records written")
        await recorder.wait_for_room()  # room again: returns at once
    finally:
        await recorder.close()
        await db.dispose()
    assert not spill.exists() or spill.read_text() == ""


async def test_steady_traffic_is_written_in_batches_per_interval_not_one_by_one(
    database_url: str,
) -> None:
    # A record lands every 4 ms while each write takes longer than that (10 ms here, the
    # database's time for a batch): the writer takes what is due at each wake-up and leaves
    # later arrivals to the next one, instead of chasing each of them with a batch of its own.
    db = Database(database_url)
    async with db.session() as session:
        session.add(Tenant(id="ten_s", slug="steady", name="s"))
        await session.commit()
    recorder = UsageRecorder(db, batch_size=500, flush_interval_s=0.2, max_queue=10_000)
    batches: list[int] = []
    write = recorder._writer.write

    async def timed_write(batch: list[UsageRecord]) -> None:
        batches.append(len(batch))
        await asyncio.sleep(0.01)
        await write(batch)

    recorder._writer.write = timed_write  # type: ignore[method-assign]
    recorder.start()
    try:
        started = time.monotonic()
        sent = 0
        while time.monotonic() - started < 1.0:
            recorder.record(record("ten_s", sent))
            sent += 1
            await asyncio.sleep(0.004)
        await eventually(lambda: _count_is(db, sent), what=f"{sent} records written")
    finally:
        await recorder.close()
        await db.dispose()
    # About one batch per 0.2 s interval (plus the last), never dozens of small ones.
    assert sum(batches) == sent and len(batches) <= 9, batches
