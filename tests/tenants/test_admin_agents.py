"""/admin/tenants/{id}/agents: versioned specs, activation, deletion, concurrency."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import pytest

from gateway.core.db import Database
from gateway.core.errors import ValidationFailedError
from tenants.agent.repository import AgentRepository
from tenants.agent.service import put_agent as put_agent_service
from tenants.agent.spec import AgentSpec
from tests.tenants.conftest import AGENT_SPEC, MakeTenant, PutAgent


def _stored(**changes: Any) -> dict[str, Any]:
    return AgentSpec(**{**AGENT_SPEC, **changes}).stored()


async def test_put_creates_then_versions(
    client: httpx.AsyncClient, admin_headers: dict[str, str], make_tenant: MakeTenant
) -> None:
    tenant = await make_tenant()
    url = f"/admin/tenants/{tenant['id']}/agents/support-bot_1"

    created = await client.put(url, json=AGENT_SPEC, headers=admin_headers)
    assert created.status_code == 201
    agent = created.json()
    assert agent["id"].startswith("agt_")
    assert agent["object"] == "agent"
    assert agent["name"] == "support-bot_1"
    assert (agent["active_version"], agent["latest_version"]) == (1, 1)
    assert agent["spec"] == _stored()
    assert agent["spec"]["model_settings"] == {
        "temperature": None,
        "top_p": None,
        "max_tokens": None,
        "frequency_penalty": None,
        "presence_penalty": None,
        "parallel_tool_calls": None,
    }

    updated = await client.put(
        url, json={**AGENT_SPEC, "instructions": "Be verbose."}, headers=admin_headers
    )
    assert updated.status_code == 200
    second = updated.json()
    assert second["id"] == agent["id"]
    assert (second["active_version"], second["latest_version"]) == (2, 2)
    assert second["spec"]["instructions"] == "Be verbose."
    assert second["created_at"] == agent["created_at"]

    fetched = await client.get(url, headers=admin_headers)
    assert fetched.status_code == 200
    assert fetched.json() == second


async def test_versions_and_activation(
    client: httpx.AsyncClient,
    admin_headers: dict[str, str],
    make_tenant: MakeTenant,
    put_agent: PutAgent,
) -> None:
    tenant = await make_tenant()
    for n in (1, 2, 3):
        await put_agent(tenant["id"], "bot", instructions=f"v{n}")
    url = f"/admin/tenants/{tenant['id']}/agents/bot"

    versions = (await client.get(f"{url}/versions", headers=admin_headers)).json()
    assert [(v["version"], v["active"]) for v in versions["data"]] == [
        (3, True),
        (2, False),
        (1, False),
    ]
    assert [v["spec"]["instructions"] for v in versions["data"]] == ["v3", "v2", "v1"]
    assert versions["has_more"] is False

    activated = await client.post(f"{url}/versions/1/activate", headers=admin_headers)
    assert activated.status_code == 200
    assert (activated.json()["active_version"], activated.json()["latest_version"]) == (1, 3)
    assert activated.json()["spec"]["instructions"] == "v1"
    assert (await client.get(url, headers=admin_headers)).json()["spec"]["instructions"] == "v1"
    versions = (await client.get(f"{url}/versions", headers=admin_headers)).json()
    assert [v["active"] for v in versions["data"]] == [False, False, True]

    # A new PUT after a rollback becomes version 4 and is active.
    latest = await put_agent(tenant["id"], "bot", instructions="v4")
    assert (latest["active_version"], latest["latest_version"]) == (4, 4)

    for missing in ("0", "5", "-1", "99999999999999999999"):
        response = await client.post(f"{url}/versions/{missing}/activate", headers=admin_headers)
        assert response.status_code == 404
        assert response.json()["error"]["type"] == "not_found_error"
    bad = await client.post(f"{url}/versions/two/activate", headers=admin_headers)
    assert bad.status_code == 422


async def test_versions_paginate_newest_first(
    client: httpx.AsyncClient,
    admin_headers: dict[str, str],
    make_tenant: MakeTenant,
    put_agent: PutAgent,
) -> None:
    tenant = await make_tenant()
    for n in range(5):
        await put_agent(tenant["id"], "bot", instructions=f"v{n + 1}")
    url = f"/admin/tenants/{tenant['id']}/agents/bot/versions"

    page = (await client.get(f"{url}?limit=2", headers=admin_headers)).json()
    assert [v["version"] for v in page["data"]] == [5, 4]
    assert page["has_more"] is True
    page = (await client.get(f"{url}?limit=2&after=4", headers=admin_headers)).json()
    assert [v["version"] for v in page["data"]] == [3, 2]
    page = (await client.get(f"{url}?limit=2&after=2", headers=admin_headers)).json()
    assert [v["version"] for v in page["data"]] == [1]
    assert page["has_more"] is False
    for cursor in ("agt_x", "-1", "9" * 30):
        bad = await client.get(f"{url}?after={cursor}", headers=admin_headers)
        assert bad.status_code == 422
        assert bad.json()["error"]["param"] == "after"


async def test_list_agents_paginates(
    client: httpx.AsyncClient,
    admin_headers: dict[str, str],
    make_tenant: MakeTenant,
    put_agent: PutAgent,
) -> None:
    tenant = await make_tenant()
    agents = [await put_agent(tenant["id"], name) for name in ("zeta", "alpha", "mid")]
    await put_agent(tenant["id"], "alpha", instructions="second")
    url = f"/admin/tenants/{tenant['id']}/agents"

    page = (await client.get(f"{url}?limit=2", headers=admin_headers)).json()
    assert [a["name"] for a in page["data"]] == ["zeta", "alpha"]
    assert page["data"][1]["spec"]["instructions"] == "second"
    assert page["has_more"] is True
    rest = (await client.get(f"{url}?after={agents[1]['id']}", headers=admin_headers)).json()
    assert [a["name"] for a in rest["data"]] == ["mid"]
    assert rest["has_more"] is False


HTTP_TOOL = {"type": "http", "name": "lookup", "url": "https://tools.example.com/lookup"}


@pytest.mark.parametrize(
    ("name", "body", "param"),
    [
        ("Bot", AGENT_SPEC, "name"),
        ("bot.v1", AGENT_SPEC, "name"),
        ("b" * 65, AGENT_SPEC, "name"),
        ("bot", {**AGENT_SPEC, "tools": ["web_search"]}, "tools"),
        ("bot", {**AGENT_SPEC, "tools": ["calculator", "calculator"]}, "tools"),
        ("bot", {**AGENT_SPEC, "temperature": 0.5}, "temperature"),
        ("bot", {**AGENT_SPEC, "model_settings": {"temperature": 3}}, "model_settings.temperature"),
        ("bot", {**AGENT_SPEC, "max_turns": 0}, "max_turns"),
        # A tool object's error names its own field, not the built-in form it is not.
        ("bot", {**AGENT_SPEC, "tools": [{**HTTP_TOOL, "timeout_s": 61}]}, "tools.0.timeout_s"),
        (
            "bot",
            {**AGENT_SPEC, "tools": [{**HTTP_TOOL, "parameters": {"type": "objekt"}}]},
            "tools.0.parameters",
        ),
        ("bot", {**AGENT_SPEC, "tools": [{"type": "mcp", "name": "m"}]}, "tools.0.url"),
        ("bot", {**AGENT_SPEC, "tools": [{"type": "ftp", "name": "t"}]}, "tools.0"),
        ("bot", {**AGENT_SPEC, "tools": [7]}, "tools.0"),
    ],
)
async def test_put_rejects_invalid_specs(
    client: httpx.AsyncClient,
    admin_headers: dict[str, str],
    make_tenant: MakeTenant,
    name: str,
    body: dict[str, Any],
    param: str,
) -> None:
    tenant = await make_tenant()
    response = await client.put(
        f"/admin/tenants/{tenant['id']}/agents/{name}", json=body, headers=admin_headers
    )
    assert response.status_code == 422
    assert response.json()["error"]["type"] == "invalid_request_error"
    assert response.json()["error"]["param"] == param
    listed = await client.get(f"/admin/tenants/{tenant['id']}/agents", headers=admin_headers)
    assert listed.json()["data"] == []


async def test_any_text_in_a_spec_round_trips(
    client: httpx.AsyncClient, admin_headers: dict[str, str], make_tenant: MakeTenant
) -> None:
    tenant = await make_tenant()
    text = "Ünïcödé \u2603, quotes \" ', a\ttab,\r\nnewlines and an \x1b escape"
    url = f"/admin/tenants/{tenant['id']}/agents/bot"
    response = await client.put(url, json={"instructions": text}, headers=admin_headers)
    assert response.status_code == 201
    assert (await client.get(url, headers=admin_headers)).json()["spec"]["instructions"] == text
    # NUL is the one character free text may not hold (PostgreSQL text cannot store it).
    response = await client.put(url, json={"instructions": "a NUL \x00"}, headers=admin_headers)
    assert response.status_code == 422
    assert response.json()["error"]["param"] == "instructions"


async def test_unknown_tool_error_names_the_tool(
    client: httpx.AsyncClient, admin_headers: dict[str, str], make_tenant: MakeTenant
) -> None:
    tenant = await make_tenant()
    response = await client.put(
        f"/admin/tenants/{tenant['id']}/agents/bot",
        json={**AGENT_SPEC, "tools": ["calculator", "rm_rf"]},
        headers=admin_headers,
    )
    assert response.status_code == 422
    assert '"rm_rf"' in response.json()["error"]["message"]
    # An empty name is shown as such (the message read "unknown tool(s) ; built-in …").
    response = await client.put(
        f"/admin/tenants/{tenant['id']}/agents/bot",
        json={**AGENT_SPEC, "tools": [""]},
        headers=admin_headers,
    )
    assert response.status_code == 422
    assert 'unknown tool(s) ""' in response.json()["error"]["message"], response.text


async def test_delete_removes_the_agent_and_its_versions(
    client: httpx.AsyncClient,
    admin_headers: dict[str, str],
    make_tenant: MakeTenant,
    put_agent: PutAgent,
) -> None:
    tenant = await make_tenant()
    await put_agent(tenant["id"], "bot")
    await put_agent(tenant["id"], "bot", instructions="v2")
    await put_agent(tenant["id"], "other")
    url = f"/admin/tenants/{tenant['id']}/agents/bot"

    response = await client.delete(url, headers=admin_headers)
    assert response.status_code == 204
    for method, path in [
        ("GET", url),
        ("DELETE", url),
        ("GET", f"{url}/versions"),
        ("POST", f"{url}/versions/1/activate"),
    ]:
        got = await client.request(method, path, headers=admin_headers)
        assert got.status_code == 404, (method, path)
    listed = await client.get(f"/admin/tenants/{tenant['id']}/agents", headers=admin_headers)
    assert [a["name"] for a in listed.json()["data"]] == ["other"]

    # The name is free again: a new PUT starts over at version 1.
    again = await client.put(url, json=AGENT_SPEC, headers=admin_headers)
    assert again.status_code == 201
    assert again.json()["latest_version"] == 1


async def test_unknown_agent_or_tenant_is_not_found(
    client: httpx.AsyncClient, admin_headers: dict[str, str], make_tenant: MakeTenant
) -> None:
    tenant = await make_tenant()
    for method, path, body in [
        ("GET", f"/admin/tenants/{tenant['id']}/agents/ghost", None),
        ("DELETE", f"/admin/tenants/{tenant['id']}/agents/ghost", None),
        ("GET", f"/admin/tenants/{tenant['id']}/agents/ghost/versions", None),
        ("POST", f"/admin/tenants/{tenant['id']}/agents/ghost/versions/1/activate", None),
        ("PUT", "/admin/tenants/ten_nope/agents/bot", AGENT_SPEC),
        ("GET", "/admin/tenants/ten_nope/agents", None),
        ("GET", "/admin/tenants/ten_nope/agents/bot", None),
    ]:
        response = await client.request(method, path, json=body, headers=admin_headers)
        assert response.status_code == 404, (method, path)
        assert response.json()["error"]["type"] == "not_found_error"


async def test_concurrent_puts_get_distinct_versions(db: Database, make_tenant: MakeTenant) -> None:
    tenant = await make_tenant()

    async def put(n: int) -> int:
        async with db.session() as session:
            spec = AgentSpec(**{**AGENT_SPEC, "instructions": f"writer {n}"})
            _, version, _ = await put_agent_service(session, tenant["id"], "racer", spec)
            await session.commit()  # the service flushes; its caller commits
            return version.version

    numbers = await asyncio.gather(*(put(n) for n in range(6)))
    assert sorted(numbers) == [1, 2, 3, 4, 5, 6]

    async with db.session() as session:
        repository = AgentRepository(session)
        agent = await repository.get(tenant["id"], "racer")
        assert agent is not None
        assert (agent.latest_version, agent.active_version) == (6, 6)
        active = await repository.get_active(tenant["id"], "racer")
        assert active is not None
        assert active[1].version == 6
        page = await repository.list_versions(tenant["id"], agent.id, limit=100, before=None)
        assert [v.version for v in page.items] == [6, 5, 4, 3, 2, 1]


async def test_put_agent_service_validates_the_name(db: Database, make_tenant: MakeTenant) -> None:
    tenant = await make_tenant()
    async with db.session() as session:
        for bad in ("Bad Name", "bot\n", "", "b" * 65):
            with pytest.raises(ValidationFailedError):
                await put_agent_service(session, tenant["id"], bad, AgentSpec())
        agent, version, created = await put_agent_service(
            session, tenant["id"], "good", AgentSpec()
        )
    assert created is True
    assert (agent.name, version.version) == ("good", 1)


async def test_get_active_and_list_active_follow_activation(
    db: Database,
    make_tenant: MakeTenant,
    put_agent: PutAgent,
    client: httpx.AsyncClient,
    admin_headers: dict[str, str],
) -> None:
    tenant = await make_tenant()
    await put_agent(tenant["id"], "zed", instructions="z1")
    await put_agent(tenant["id"], "abe", instructions="a1")
    await put_agent(tenant["id"], "abe", instructions="a2")
    await client.post(
        f"/admin/tenants/{tenant['id']}/agents/abe/versions/1/activate", headers=admin_headers
    )
    async with db.session() as session:
        repository = AgentRepository(session)
        found = await repository.get_active(tenant["id"], "abe")
        assert found is not None
        assert (found[0].name, found[1].version, found[1].spec["instructions"]) == ("abe", 1, "a1")
        assert await repository.get_active(tenant["id"], "nobody") is None
        listed = await repository.list_active(tenant["id"])
        assert [(a.name, v.spec["instructions"]) for a, v in listed] == [
            ("abe", "a1"),
            ("zed", "z1"),
        ]


async def test_a_version_stored_under_older_rules_still_serves_but_is_not_reactivated(
    client: httpx.AsyncClient,
    admin_headers: dict[str, str],
    make_tenant: MakeTenant,
    issue_key: Any,
    db: Database,
) -> None:
    """Rules added to the PUT (a duplicate allowed tool, a URL with a space) hold for what is
    sent. A version stored before them still loads where it is read back (`GET /v1/agents`
    lists it, not a 500); activating it again is held to today's rules: a 422 that says so,
    not a 500."""
    tenant = await make_tenant()
    url = f"/admin/tenants/{tenant['id']}/agents/old-bot"
    crm = {"type": "mcp", "name": "crm", "url": "https://mcp.example.com/mcp"}
    for tools in ([{**crm, "allowed_tools": ["find"]}], []):
        r = await client.put(url, json={**AGENT_SPEC, "tools": tools}, headers=admin_headers)
        assert r.status_code in (200, 201), r.text
    older = {**crm, "url": crm["url"] + " ", "allowed_tools": ["find", "find"]}
    async with db.unit() as session:  # as the PUT stored it before the rules
        repository = AgentRepository(session)
        agent = await repository.get(tenant["id"], "old-bot")
        assert agent is not None
        for number in (1, 2):
            version = await repository.get_version(tenant["id"], agent.id, number)
            assert version is not None
            version.spec = {**version.spec, "tools": [older]}
            session.add(version)
    key = (await issue_key(tenant["id"]))["key"]
    listed = await client.get("/v1/agents", headers={"Authorization": f"Bearer {key}"})
    assert listed.status_code == 200, listed.text
    assert [agent["name"] for agent in listed.json()["data"]] == ["old-bot"]
    activated = await client.post(f"{url}/versions/1/activate", headers=admin_headers)
    assert activated.status_code == 422, activated.text
    error = activated.json()["error"]
    assert "no longer passes the checks a PUT makes" in error["message"]
    assert error["param"].startswith("tools.0."), error
