"""Fixtures for control-plane tests: admin API helpers and a direct database handle."""

from __future__ import annotations

import itertools
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import httpx
import pytest

from gateway.core.db import Database

AGENT_SPEC: dict[str, Any] = {
    "description": "Answers questions.",
    "instructions": "Be brief.",
    "model": "gpt-4.1-mini",
    "tools": ["calculator"],
    "max_turns": 5,
}

_slugs = itertools.count(1)

MakeTenant = Callable[..., Awaitable[dict[str, Any]]]
IssueKey = Callable[..., Awaitable[dict[str, Any]]]
PutAgent = Callable[..., Awaitable[dict[str, Any]]]


@pytest.fixture
async def db(database_url: str) -> AsyncIterator[Database]:
    """An engine on the test database, for repository tests and direct checks."""
    database = Database(database_url)
    yield database
    await database.dispose()


@pytest.fixture
def make_tenant(client: httpx.AsyncClient, admin_headers: dict[str, str]) -> MakeTenant:
    """Create a tenant through the admin API; returns its JSON."""

    async def make(slug: str | None = None, **fields: Any) -> dict[str, Any]:
        body = {"slug": slug or f"tenant-{next(_slugs)}", "name": "Test tenant", **fields}
        response = await client.post("/admin/tenants", json=body, headers=admin_headers)
        assert response.status_code == 201, response.text
        created: dict[str, Any] = response.json()
        return created

    return make


@pytest.fixture
def issue_key(client: httpx.AsyncClient, admin_headers: dict[str, str]) -> IssueKey:
    """Issue a key through the admin API; returns the creation JSON (with the plaintext)."""

    async def issue(tenant_id: str, **fields: Any) -> dict[str, Any]:
        body = {"name": "test key", **fields}
        response = await client.post(
            f"/admin/tenants/{tenant_id}/keys", json=body, headers=admin_headers
        )
        assert response.status_code == 201, response.text
        created: dict[str, Any] = response.json()
        return created

    return issue


@pytest.fixture
def put_agent(client: httpx.AsyncClient, admin_headers: dict[str, str]) -> PutAgent:
    """PUT an agent spec through the admin API; returns the agent JSON."""

    async def put(tenant_id: str, name: str, **changes: Any) -> dict[str, Any]:
        response = await client.put(
            f"/admin/tenants/{tenant_id}/agents/{name}",
            json={**AGENT_SPEC, **changes},
            headers=admin_headers,
        )
        assert response.status_code in (200, 201), response.text
        agent: dict[str, Any] = response.json()
        return agent

    return put
