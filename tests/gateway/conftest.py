"""Fixtures for data-plane tests: the mock LLM over real HTTP and a seeded gateway."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from gateway.mock_llm import MockConfig
from gateway.mock_llm.app import LEDGER_TEXT_CHARS
from gateway.mock_llm.logic import strip_markers
from gateway.mock_llm.testing import start_mock_server
from tests.conftest import ADMIN_TOKEN, make_settings, started_app

ADMIN = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
AGENT_SPEC: dict[str, Any] = {
    "description": "Test assistant",
    "instructions": "Be brief.",
    "model": "mock-model",
    "tools": ["calculator", "current_time"],
    "max_turns": 4,
}


@pytest.fixture(scope="session")
def mock_llm_base_url() -> Iterator[str]:
    """The mock LLM as a real HTTP server for the whole session."""
    base_url, stop = start_mock_server(MockConfig(stall_seconds=3.0))
    yield base_url
    stop()


@dataclass
class Tenant:
    id: str
    slug: str
    key: str
    key_id: str

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.key}"}


@dataclass
class Gateway:
    app: FastAPI
    client: httpx.AsyncClient
    mock_url: str

    def mock_ledger(self, user_text: str | None = None) -> list[dict[str, Any]]:
        return read_ledger(self.mock_url, user_text)

    async def create_tenant(self, slug: str, *, agent: dict[str, Any] | None = None) -> Tenant:
        r = await self.client.post(
            "/admin/tenants", json={"slug": slug, "name": slug}, headers=ADMIN
        )
        assert r.status_code == 201, r.text
        tenant_id = r.json()["id"]
        r = await self.client.post(
            f"/admin/tenants/{tenant_id}/keys", json={"name": "test"}, headers=ADMIN
        )
        assert r.status_code == 201, r.text
        key = r.json()
        r = await self.client.put(
            f"/admin/tenants/{tenant_id}/agents/assistant", json=agent or AGENT_SPEC, headers=ADMIN
        )
        assert r.status_code == 201, r.text
        return Tenant(id=tenant_id, slug=slug, key=key["key"], key_id=key["id"])

    async def flush_usage(self) -> None:
        await self.app.state.recorder.flush()


async def gateway_for(settings_url: str, mock_url: str, **overrides: Any) -> AsyncIterator[Gateway]:
    settings = make_settings(settings_url, openai_base_url=mock_url, **overrides)
    async for app in started_app(settings):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://gateway.test") as c:
            yield Gateway(app=app, client=c, mock_url=mock_url)


@pytest.fixture(params=["responses", "chat_completions"])
def upstream_api(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
async def gateway(
    sqlite_url: str, mock_llm_base_url: str, upstream_api: str
) -> AsyncIterator[Gateway]:
    """A gateway on SQLite, upstream = the mock LLM, over both upstream APIs."""
    async for gw in gateway_for(sqlite_url, mock_llm_base_url, upstream_api=upstream_api):
        yield gw


@pytest.fixture
async def tenant(gateway: Gateway) -> Tenant:
    return await gateway.create_tenant("acme")


def read_ledger(mock_url: str, user_text: str | None = None) -> list[dict[str, Any]]:
    """The mock LLM's own record of the usage it reported. With `user_text`, only the calls
    whose last user message is that text: a test's own calls, whatever a call left over by an
    earlier test (the mock LLM is shared by the whole session) adds meanwhile."""
    entries: list[dict[str, Any]] = httpx.get(f"{mock_url}/_mock/ledger").json()
    if user_text is None:
        return entries
    wanted = strip_markers(user_text)[:LEDGER_TEXT_CHARS]
    return [entry for entry in entries if entry["user_text"] == wanted]


def live_usage(base_url: str, tenant_id: str, runs: int, group_by: str = "agent") -> dict[str, Any]:
    """The tenant's usage report once it counts `runs` runs (the recorder flushes in batches)."""
    deadline = time.monotonic() + 10
    while True:
        r = httpx.get(
            f"{base_url}/admin/tenants/{tenant_id}/usage?group_by={group_by}", headers=ADMIN
        ).json()
        if r["totals"]["runs"] >= runs or time.monotonic() > deadline:
            return dict(r)
        time.sleep(0.05)
