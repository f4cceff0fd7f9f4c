"""A usage record the database refuses is quarantined; the records around it are stored, for
every tenant, and the quarantine is counted in `gateway_usage_dead_letters_total`."""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import text

from gateway.core.clock import utcnow
from gateway.core.db import Database
from gateway.core.ids import new_id
from gateway.usage.recorder import UsageRecorder
from tenants.models import UsageRecord
from tests.gateway.conftest import Gateway, gateway_for
from tests.observability.live import parse_metrics, total

RUN = "/v1/agents/assistant/runs"
DEAD = "gateway_usage_dead_letters_total"


@pytest.fixture
async def gw(database_url: str, mock_llm_base_url: str, tmp_path: Path) -> AsyncIterator[Gateway]:
    async for gateway in gateway_for(
        database_url,
        mock_llm_base_url,
        usage_batch_size=50,
        usage_dead_letter_path=str(tmp_path / "dead.ndjson"),
    ):
        yield gateway


def poisoned(database_url: str, tenant_id: str, model: str | None = None) -> UsageRecord:
    """A record the API can no longer produce, handed straight to the recorder: NUL on
    PostgreSQL (the report's case), a lone surrogate on SQLite (which stores NUL). With
    `model`, a good record instead."""
    if model is None:
        model = "gpt\x00" if database_url.startswith("postgresql") else "gpt\ud800"
    now = utcnow()
    return UsageRecord.model_construct(
        run_id=new_id("run"),
        tenant_id=tenant_id,
        key_id=None,
        user=None,
        agent="assistant",
        agent_version=1,
        model=model,
        requests=1,
        input_tokens=5,
        output_tokens=5,
        cached_tokens=0,
        reasoning_tokens=0,
        total_tokens=10,
        status="completed",
        latency_ms=3,
        day=now.date(),
        created_at=now,
    )


async def _rows(db: Database, sql: str) -> list[dict[str, Any]]:
    async with db.engine.connect() as conn:
        return [dict(row._mapping) for row in await conn.execute(text(sql))]


async def _dead_letters(gw: Gateway) -> float:
    return total(parse_metrics((await gw.client.get("/metrics")).text), DEAD)


async def test_a_poisoned_record_is_quarantined_and_every_other_tenant_is_stored(
    gw: Gateway, database_url: str
) -> None:
    acme, globex = await gw.create_tenant("acme"), await gw.create_tenant("globex")
    recorder: UsageRecorder = gw.app.state.recorder
    before = await _dead_letters(gw)
    bad = poisoned(database_url, acme.id)
    run_ids = []
    # The bad record sits in the middle of one batch, with both tenants' runs around it.
    for i in range(6):
        if i == 3:
            recorder.record(bad)
        tenant = acme if i % 2 else globex
        r = await gw.client.post(RUN, json={"input": f"hi {i}"}, headers=tenant.headers)
        assert r.status_code == 200, r.text
        run_ids.append(r.json()["id"])
    await gw.flush_usage()

    db: Database = gw.app.state.db
    stored = await _rows(db, "SELECT run_id FROM usage_records")
    assert sorted(row["run_id"] for row in stored) == sorted(run_ids)
    letters = await _rows(db, "SELECT run_id, tenant_id, reason, record FROM usage_dead_letters")
    assert len(letters) == 1
    assert letters[0]["run_id"] == bad.run_id and letters[0]["tenant_id"] == acme.id
    assert json.loads(letters[0]["record"])["model"] == bad.model  # kept exactly
    assert letters[0]["reason"]
    assert recorder.depth == 0
    assert await _dead_letters(gw) == before + 1

    # The writer is not stuck: later runs are stored at once.
    r = await gw.client.post(RUN, json={"input": "after"}, headers=globex.headers)
    await gw.flush_usage()
    stored = await _rows(db, "SELECT run_id FROM usage_records")
    assert r.json()["id"] in {row["run_id"] for row in stored}


async def test_the_dead_letter_file_takes_what_the_table_refuses(
    gw: Gateway, database_url: str, tmp_path: Path
) -> None:
    acme = await gw.create_tenant("acme")
    db: Database = gw.app.state.db
    async with db.engine.begin() as conn:
        await conn.execute(text("ALTER TABLE usage_dead_letters RENAME TO usage_dead_away"))
    try:
        before = parse_metrics((await gw.client.get("/metrics")).text)
        bad = poisoned(database_url, acme.id)
        gw.app.state.recorder.record(bad)
        r = await gw.client.post(RUN, json={"input": "hi"}, headers=acme.headers)
        assert r.status_code == 200
        await gw.flush_usage()
    finally:
        async with db.engine.begin() as conn:
            await conn.execute(text("ALTER TABLE usage_dead_away RENAME TO usage_dead_letters"))
    lines = (tmp_path / "dead.ndjson").read_text().splitlines()
    assert len(lines) == 1
    letter = json.loads(lines[0])
    assert json.loads(letter["record"])["run_id"] == bad.run_id
    after = parse_metrics((await gw.client.get("/metrics")).text)
    assert total(after, DEAD, sink="file") == total(before, DEAD, sink="file") + 1
    stored = await _rows(db, "SELECT run_id FROM usage_records")
    assert [row["run_id"] for row in stored] == [r.json()["id"]]


@pytest.fixture
async def big_batches(database_url: str, mock_llm_base_url: str) -> AsyncIterator[Gateway]:
    async for gateway in gateway_for(database_url, mock_llm_base_url, usage_batch_size=200):
        yield gateway


async def test_many_bad_records_in_a_large_batch(big_batches: Gateway, database_url: str) -> None:
    """Bisection settles a 200-record batch with 3 bad records in one flush."""
    gw = big_batches
    acme = await gw.create_tenant("acme")
    recorder: UsageRecorder = gw.app.state.recorder
    good = []
    for i in range(200):
        bad = i in (0, 117, 199)
        record = poisoned(database_url, acme.id, None if bad else "gpt-4.1-mini")
        if not bad:
            good.append(record.run_id)
        recorder.record(record)
    started = time.monotonic()
    await gw.flush_usage()
    elapsed = time.monotonic() - started
    db: Database = gw.app.state.db
    stored = await _rows(db, "SELECT run_id FROM usage_records")
    assert sorted(row["run_id"] for row in stored) == sorted(good)
    letters = await _rows(db, "SELECT run_id FROM usage_dead_letters")
    assert len(letters) == 3
    assert recorder.depth == 0
    assert elapsed < 10, elapsed
