"""Tenant B can never see or change tenant A's keys, agents or usage: routes and repositories."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from sqlmodel import select

from gateway.core.clock import utcnow
from gateway.core.db import Database
from tenants.agent.repository import AgentRepository
from tenants.api_key.repository import ApiKeyRepository
from tenants.models import ApiKey, UsageRecord
from tenants.pagination import PageParams
from tenants.usage.repository import UsageRepository
from tests.tenants.conftest import AGENT_SPEC, IssueKey, MakeTenant, PutAgent


@pytest.fixture
async def two_tenants(
    make_tenant: MakeTenant, issue_key: IssueKey, put_agent: PutAgent
) -> dict[str, Any]:
    """Tenant A with a key, an agent (2 versions) and usage; tenant B with nothing."""
    a = await make_tenant("tenant-a")
    b = await make_tenant("tenant-b")
    key = await issue_key(a["id"])
    await put_agent(a["id"], "secret-agent", instructions="A v1")
    agent = await put_agent(a["id"], "secret-agent", instructions="A v2")
    return {"a": a["id"], "b": b["id"], "key": key, "agent": agent}


async def test_routes_with_b_in_the_path_never_reach_a(
    client: httpx.AsyncClient, admin_headers: dict[str, str], two_tenants: dict[str, Any]
) -> None:
    a, b, key = two_tenants["a"], two_tenants["b"], two_tenants["key"]
    b_url = f"/admin/tenants/{b}"
    for method, path in [
        ("DELETE", f"{b_url}/keys/{key['id']}"),
        ("GET", f"{b_url}/agents/secret-agent"),
        ("DELETE", f"{b_url}/agents/secret-agent"),
        ("GET", f"{b_url}/agents/secret-agent/versions"),
        ("POST", f"{b_url}/agents/secret-agent/versions/1/activate"),
    ]:
        response = await client.request(method, path, headers=admin_headers)
        assert response.status_code == 404, (method, path)
        assert response.json()["error"]["type"] == "not_found_error"
        assert "A v" not in response.text

    for path in (f"{b_url}/keys", f"{b_url}/agents"):
        listed = await client.get(path, headers=admin_headers)
        assert listed.json() == {"data": [], "has_more": False}

    # A's key is still live and A's agent untouched.
    a_keys = (await client.get(f"/admin/tenants/{a}/keys", headers=admin_headers)).json()
    assert a_keys["data"][0]["revoked_at"] is None
    a_agent = await client.get(f"/admin/tenants/{a}/agents/secret-agent", headers=admin_headers)
    assert a_agent.json() == two_tenants["agent"]


async def test_same_agent_name_in_b_is_a_separate_agent(
    client: httpx.AsyncClient, admin_headers: dict[str, str], two_tenants: dict[str, Any]
) -> None:
    a, b = two_tenants["a"], two_tenants["b"]
    response = await client.put(
        f"/admin/tenants/{b}/agents/secret-agent",
        json={**AGENT_SPEC, "instructions": "B v1"},
        headers=admin_headers,
    )
    assert response.status_code == 201
    assert response.json()["latest_version"] == 1
    assert response.json()["id"] != two_tenants["agent"]["id"]
    a_agent = await client.get(f"/admin/tenants/{a}/agents/secret-agent", headers=admin_headers)
    assert a_agent.json()["spec"]["instructions"] == "A v2"
    assert a_agent.json()["latest_version"] == 2


async def test_b_usage_route_does_not_include_a(
    client: httpx.AsyncClient,
    admin_headers: dict[str, str],
    db: Database,
    two_tenants: dict[str, Any],
) -> None:
    a, b = two_tenants["a"], two_tenants["b"]
    today = utcnow().date()
    async with db.unit() as session:
        await UsageRepository(session).add_many(
            [
                UsageRecord(
                    run_id="run_a1", tenant_id=a, agent="secret-agent", model="m",
                    status="completed", requests=1, total_tokens=9, day=today,
                )
            ]
        )  # fmt: skip
    for group_by in ("day", "agent", "model", "key", "user"):
        b_report = await client.get(
            f"/admin/tenants/{b}/usage?group_by={group_by}", headers=admin_headers
        )
        assert b_report.json()["data"] == []
        assert b_report.json()["totals"]["runs"] == 0
        a_report = await client.get(
            f"/admin/tenants/{a}/usage?group_by={group_by}", headers=admin_headers
        )
        assert a_report.json()["totals"]["runs"] == 1


async def test_api_key_repository_is_scoped(db: Database, two_tenants: dict[str, Any]) -> None:
    a, b, key_id = two_tenants["a"], two_tenants["b"], two_tenants["key"]["id"]
    async with db.session() as session:
        repository = ApiKeyRepository(session)
        assert await repository.get(b, key_id) is None
        assert (await repository.list_page(b, PageParams())).items == []
        found = await repository.get(a, key_id)
        assert found is not None and found.id == key_id
        assert [k.id for k in (await repository.list_page(a, PageParams())).items] == [key_id]

        await repository.revoke_all(b, utcnow())
        await session.commit()
        row = (await session.exec(select(ApiKey).where(ApiKey.id == key_id))).one()
        await session.refresh(row)
        assert row.revoked_at is None


async def test_agent_repository_is_scoped(db: Database, two_tenants: dict[str, Any]) -> None:
    a, b, agent_id = two_tenants["a"], two_tenants["b"], two_tenants["agent"]["id"]
    async with db.session() as session:
        repository = AgentRepository(session)
        assert await repository.get(b, "secret-agent") is None
        assert (await repository.list_page(b, PageParams())).items == []
        assert await repository.get_version(b, agent_id, 1) is None
        versions = await repository.list_versions(b, agent_id, limit=10, before=None)
        assert versions.items == []
        assert await repository.get_active(b, "secret-agent") is None
        assert await repository.list_active(b) == []
        assert await repository.bump_version(b, "secret-agent", utcnow()) is None
        agent_a = await repository.get(a, "secret-agent")
        assert agent_a is not None
        assert await repository.active_versions(b, [agent_a]) == {}
        assert await repository.existing_names(b, ["secret-agent"]) == set()  # handoff check
        assert await repository.existing_names(a, ["secret-agent", "x"]) == {"secret-agent"}

        await repository.delete(b, agent_id)
        await session.commit()

        # The controls: the same calls with A's id do find A's rows, untouched.
        assert await repository.get_version(a, agent_id, 1) is not None
        found = await repository.get_active(a, "secret-agent")
        assert found is not None
        assert (found[0].id, found[1].version, found[0].latest_version) == (agent_id, 2, 2)
        assert [ag.name for ag, _ in await repository.list_active(a)] == ["secret-agent"]
        page = await repository.list_versions(a, agent_id, limit=10, before=None)
        assert [v.version for v in page.items] == [2, 1]


async def test_usage_repository_is_scoped(db: Database, two_tenants: dict[str, Any]) -> None:
    a, b = two_tenants["a"], two_tenants["b"]
    today = utcnow().date()
    async with db.unit() as session:
        repository = UsageRepository(session)
        await repository.add_many(
            [
                UsageRecord(
                    run_id="run_a2", tenant_id=a, agent="secret-agent", model="m",
                    status="completed", requests=2, input_tokens=4, total_tokens=4, day=today,
                )
            ]
        )  # fmt: skip
        for group_by in ("day", "agent", "model", "key", "user"):
            b_report = await repository.report(
                tenant_id=b, group_by=group_by, start=today, end=today
            )
            assert b_report["data"] == []
            a_report = await repository.report(
                tenant_id=a, group_by=group_by, start=today, end=today
            )
            assert a_report["totals"]["requests"] == 2
