"""Reports come from the rollups: every report from rollups equals the same report computed
from the raw records, after a mixed workload on two gateway processes; the migration that
creates the rollups backfills them from the records already stored."""

from __future__ import annotations

import asyncio
import itertools
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlalchemy as sa
from sqlmodel import func, select

from gateway.core.clock import utcnow
from gateway.core.db import Database
from gateway.core.migrate import downgrade, upgrade
from tenants.models import UsageRecord
from tenants.price.pricing import PriceBook
from tenants.usage.repository import UsageRepository, priced
from tests.conftest import gateway_env
from tests.gateway.conftest import ADMIN, AGENT_SPEC, mock_llm_base_url
from tests.identity.conftest import claims, sign
from tests.limits.conftest import GatewayProcess
from tests.tenants.test_admin_usage import record
from tests.waiting import eventually, wait_until

TENANT_GROUPS = ("day", "agent", "model", "key", "user")
ADMIN_GROUPS = (*TENANT_GROUPS, "tenant")
__all__ = ["mock_llm_base_url"]


async def assert_reports_agree(db: Database, tenant_ids: list[str], start: date, end: date) -> int:
    """Every tenant report and every admin report, from rollups and from raw rows: equal.
    Returns the number of runs in range."""
    async with db.session() as session:
        repository = UsageRepository(session)
        scopes: list[str | None] = [*tenant_ids, None]
        for tenant_id in scopes:
            for group_by in ADMIN_GROUPS if tenant_id is None else TENANT_GROUPS:
                args = {"tenant_id": tenant_id, "group_by": group_by, "start": start, "end": end}
                from_rollups = await repository.report(**args)
                from_raw = await repository.raw_report(**args)
                assert from_rollups == from_raw, (tenant_id, group_by)
        everything = await repository.report(
            tenant_id=None, group_by="tenant", start=start, end=end
        )
    runs: int = everything["totals"]["runs"]
    return runs


async def _count(db: Database) -> int:
    async with db.session() as session:
        return int((await session.exec(select(func.count()).select_from(UsageRecord))).one())


class Replicas:
    def __init__(self, urls: list[str]) -> None:
        self.urls = urls
        self.clients = [httpx.AsyncClient(base_url=url, timeout=30) for url in urls]

    def client(self, i: int) -> httpx.AsyncClient:
        return self.clients[i % len(self.clients)]

    async def close(self) -> None:
        for client in self.clients:
            await client.aclose()


async def _setup(replicas: Replicas) -> tuple[list[str], list[dict[str, str]]]:
    """Two tenants, two keys each, two agents (one model priced, then repriced; one never
    priced), end-user JWTs on the first tenant. Returns tenant ids and credential headers."""
    admin = replicas.client(0)
    price = {"input_per_mtok": "0.40", "cached_input_per_mtok": "0.10", "output_per_mtok": "1.60"}
    r = await admin.put("/admin/models/mock-model/price", json=price, headers=ADMIN)
    assert r.status_code == 200, r.text
    tenant_ids: list[str] = []
    credentials: list[dict[str, str]] = []
    for slug in ("roll-a", "roll-b"):
        r = await admin.post("/admin/tenants", json={"slug": slug, "name": slug}, headers=ADMIN)
        assert r.status_code == 201, r.text
        tid = r.json()["id"]
        tenant_ids.append(tid)
        for agent, model in (("assistant", "mock-model"), ("helper", "other-model")):
            spec = {**AGENT_SPEC, "model": model}
            r = await admin.put(f"/admin/tenants/{tid}/agents/{agent}", json=spec, headers=ADMIN)
            assert r.status_code == 201, r.text
        for name in ("k1", "k2"):
            r = await admin.post(f"/admin/tenants/{tid}/keys", json={"name": name}, headers=ADMIN)
            assert r.status_code == 201, r.text
            credentials.append({"Authorization": f"Bearer {r.json()['key']}"})
    r = await admin.put(
        f"/admin/tenants/{tenant_ids[0]}/jwt",
        json={"mode": "hs256", "issuer": "roll-a"},
        headers=ADMIN,
    )
    assert r.status_code == 200, r.text
    secret = r.json()["secret"]
    for sub in ("alice", "bob"):
        token = sign(claims("roll-a", sub=sub), secret, "HS256")
        credentials.append({"Authorization": f"Bearer {token}"})
    return tenant_ids, credentials


async def _run(client: httpx.AsyncClient, headers: dict[str, str], agent: str, text: str) -> int:
    r = await client.post(f"/v1/agents/{agent}/runs", json={"input": text}, headers=headers)
    return r.status_code


async def _cancelled(client: httpx.AsyncClient, headers: dict[str, str]) -> None:
    """A streamed run whose client leaves after `run.created`, during a slow model call."""
    body = {"input": "hello [[latency:3000]]", "stream": True}
    async with client.stream("POST", "/v1/agents/assistant/runs", json=body, headers=headers) as r:
        assert r.status_code == 200
        async for line in r.aiter_lines():
            if line.startswith("event: run.created"):
                break


@pytest.fixture
def replicas(database_url: str, mock_llm_base_url: str, tmp_path: Path) -> Any:
    env = gateway_env(
        database_url,
        OPENAI_BASE_URL=mock_llm_base_url,
        GATEWAY_UPSTREAM_MAX_RETRIES="0",
        GATEWAY_UPSTREAM_API="chat_completions",
        GATEWAY_USAGE_BATCH_SIZE="3",
    )
    procs = [GatewayProcess(env, tmp_path / f"gw{i}.log") for i in range(2)]
    try:
        if not all(wait_until(p.ready, timeout=30, interval=0.2) for p in procs):
            pytest.fail(f"gateways did not start: {[p.log.name for p in procs]}")
        yield [p.url for p in procs]
    finally:
        for p in procs:
            p.stop()


async def test_reports_from_rollups_equal_reports_from_raw_rows_after_a_mixed_workload(
    replicas: list[str], database_url: str
) -> None:
    cluster = Replicas(replicas)
    db = Database(database_url)
    try:
        tenant_ids, credentials = await _setup(cluster)
        n = itertools.count()
        texts = ["hi", "what is 2+2? use calculator", "tell me a story", "hello there"]
        jobs: list[Any] = []
        for headers in credentials:
            for text in texts:
                jobs.append(_run(cluster.client(next(n)), headers, "assistant", text))
            jobs.append(_run(cluster.client(next(n)), headers, "helper", "hi from helper"))
            jobs.append(_run(cluster.client(next(n)), headers, "assistant", "[[fault:500]]"))
        statuses = await asyncio.gather(*jobs[: len(jobs) // 2])
        # A new price mid-workload: later runs cost more, earlier ones keep their cost.
        reprice = {"input_per_mtok": "0.8", "output_per_mtok": "3.2"}
        r = await cluster.client(1).put(
            "/admin/models/mock-model/price", json=reprice, headers=ADMIN
        )
        assert r.status_code == 200, r.text
        statuses += await asyncio.gather(*jobs[len(jobs) // 2 :])
        await asyncio.gather(*(_cancelled(cluster.client(i), credentials[i]) for i in range(2)))
        assert sorted(set(statuses)) == [200, 502], statuses
        expected = len(jobs) + 2

        async def all_written() -> bool:
            return await _count(db) >= expected

        await eventually(all_written, timeout=30, interval=0.1, what="every usage record written")

        today = utcnow().date()
        runs = await assert_reports_agree(db, tenant_ids, today - timedelta(days=1), today)
        assert runs == expected
        async with db.session() as session:
            rows = (await session.exec(select(UsageRecord))).all()
        assert {row.status for row in rows} == {"completed", "failed", "cancelled"}
        assert {row.unpriced for row in rows} == {True, False}
        assert len({row.cost_pico for row in rows if not row.unpriced}) > 1
        assert {row.user for row in rows} >= {"alice", "bob", None}
    finally:
        await cluster.close()
        await db.dispose()


async def test_the_migration_backfills_rollups_from_stored_records(database_url: str) -> None:
    """Records stored before the rollups existed show in the reports once migrated."""
    await asyncio.to_thread(downgrade, database_url, "0009-1")  # just before the rollups
    book = PriceBook([])
    days = [date(2026, 4, d) for d in (1, 2, 3)]
    records = [
        record(tenant, day, agent=agent, model=model, user=user, key_id=key)
        for tenant in ("ten_a", "ten_b")
        for day in days
        for agent, model, user, key in (
            ("bot", "m1", "alice", "key_1"),
            ("bot", "m2", None, None),
            ("helper", "m1", "bob", "key_2"),
        )
    ]
    db = Database(database_url)
    try:
        rows = [priced(item.model_dump(), book) for item in records]

        def insert(sync_conn: Any) -> None:
            # The table as it was at that revision (later migrations add columns).
            table = sa.Table("usage_records", sa.MetaData(), autoload_with=sync_conn)
            sync_conn.execute(
                table.insert(), [{k: v for k, v in row.items() if k in table.c} for row in rows]
            )

        async with db.engine.begin() as conn:
            await conn.run_sync(insert)
        await asyncio.to_thread(upgrade, database_url)
        runs = await assert_reports_agree(db, ["ten_a", "ten_b"], days[0], days[-1])
        assert runs == len(records)
    finally:
        await db.dispose()
        await asyncio.to_thread(upgrade, database_url)
