"""A database that refuses new connections (PostgreSQL's `ALLOW_CONNECTIONS false`, SQLSTATE
55000, after the pool's connections were terminated) is a 503 `service_unavailable` /
`database_unavailable`, as a database that cannot be reached: never a 500."""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import AsyncIterator

import pytest

from gateway.core.migrate import upgrade
from tests.conftest import ADMIN_TOKEN, PG_URL, _pg_admin_execute
from tests.gateway.conftest import gateway_for

pytestmark = [pytest.mark.faults, pytest.mark.postgres]

ADMIN = {"Authorization": f"Bearer {ADMIN_TOKEN}"}


@pytest.fixture
async def refusable_db() -> AsyncIterator[tuple[str, str]]:
    """A migrated database of this test's own (its connections are refused and cut)."""
    name = f"gw_refuse_{secrets.token_hex(4)}"
    await _pg_admin_execute(f'CREATE DATABASE "{name}"')
    base, _, _ = PG_URL.rpartition("/")
    url = f"{base}/{name}"
    await asyncio.to_thread(upgrade, url)
    yield url, name
    await _pg_admin_execute(f'ALTER DATABASE "{name}" WITH ALLOW_CONNECTIONS true')
    await _pg_admin_execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


async def refuse_connections(name: str) -> None:
    """New connections refused, the pool's connections cut (`name` is this test's own
    generated hex name)."""
    await _pg_admin_execute(f'ALTER DATABASE "{name}" WITH ALLOW_CONNECTIONS false')
    terminate = "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = "
    await _pg_admin_execute(terminate + f"'{name}'")


async def test_a_database_refusing_connections_is_a_503(
    refusable_db: tuple[str, str], mock_llm_base_url: str
) -> None:
    url, name = refusable_db
    async for gw in gateway_for(url, mock_llm_base_url):
        r = await gw.client.get("/admin/tenants", headers=ADMIN)
        assert r.status_code == 200, r.text
        await refuse_connections(name)
        for _ in range(3):  # a pooled connection that was cut, then new ones refused
            r = await gw.client.get("/admin/tenants", headers=ADMIN)
            assert r.status_code == 503, r.text
            assert r.json()["error"]["type"] == "service_unavailable"
            assert r.json()["error"]["code"] == "database_unavailable"
            assert "retry-after" in r.headers
        unknown = {"Authorization": "Bearer gw_" + "A" * 32 + "000000"}
        r = await gw.client.get("/v1/agents", headers=unknown)
        assert r.status_code in (401, 503), r.text


async def test_an_export_the_database_cannot_start_is_a_503_not_a_broken_200(
    refusable_db: tuple[str, str], mock_llm_base_url: str
) -> None:
    url, name = refusable_db
    async for gw in gateway_for(url, mock_llm_base_url):
        r = await gw.client.get("/admin/usage/records", headers=ADMIN)
        assert r.status_code == 200, r.text
        await refuse_connections(name)
        for accept in ("application/x-ndjson", "text/csv"):
            r = await gw.client.get("/admin/usage/records", headers={**ADMIN, "Accept": accept})
            assert r.status_code == 503, r.text
            assert r.json()["error"]["code"] == "database_unavailable"
