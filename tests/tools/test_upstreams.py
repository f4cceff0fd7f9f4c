"""Tenant upstreams and model allow-lists: the admin routes (key encrypted, shown as its last
4, URL through the egress guard, 409 while in use), agents running on their tenant's
upstream, changes reaching another replica within 1 s, and `allowed_models`."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine

from gateway.core.egress import StaticResolver
from tests.gateway.conftest import ADMIN, Gateway, gateway_for
from tests.observability.live import parse_metrics, total
from tests.tools.receiver import answering, receiver

KEY = "sk-tenant-key-0000-WXYZ"


@pytest.fixture
async def gw(database_url: str, mock_llm_base_url: str) -> AsyncIterator[Gateway]:
    async for gateway in gateway_for(database_url, mock_llm_base_url, egress_allow="127.0.0.0/8"):
        yield gateway


def upstream(base_url: str, **extra: Any) -> dict[str, Any]:
    return {"base_url": base_url, "api_key": KEY, "api": "chat_completions", **extra}


def agent_on(name: str | None, model: str = "mock-model") -> dict[str, Any]:
    return {"instructions": "Be brief.", "model": model, "upstream": name}


async def test_upstream_routes_keep_the_key_secret(gw: Gateway, database_url: str) -> None:
    tenant = await gw.create_tenant("bring-your-own")
    path = f"/admin/tenants/{tenant.id}/upstreams/mine"
    r = await gw.client.put(path, json=upstream("https://llm.example.com/v1"), headers=ADMIN)
    assert r.status_code == 201, r.text
    assert r.json()["api_key"] == "…WXYZ" and r.json()["version"] == 1
    r = await gw.client.put(path, json=upstream("https://llm2.example.com/v1"), headers=ADMIN)
    assert r.status_code == 200 and r.json()["version"] == 2
    assert (await gw.client.get(path, headers=ADMIN)).json()["base_url"] == (
        "https://llm2.example.com/v1"
    )
    listed = await gw.client.get(f"/admin/tenants/{tenant.id}/upstreams", headers=ADMIN)
    assert [row["name"] for row in listed.json()["data"]] == ["mine"]
    refusals = ("http://llm.example.com/v1", "https://10.0.0.1/v1", "https://[::1]/v1")
    for refused in (*refusals, "https://0xa9.0xfe.0xa9.0xfe/v1"):  # a legacy IPv4 form
        r = await gw.client.put(path, json=upstream(refused), headers=ADMIN)
        assert r.status_code == 422 and r.json()["error"]["code"] == "url_not_allowed", refused
    # The API paths are appended to the base: a query or fragment would break every call.
    # So would a space (a URL pasted with a trailing blank): every call failed at run time.
    for broken, says in (
        ("https://llm.example.com/v1?x=1", "no query"),
        ("https://llm.example.com/v1#frag", "no query"),
        ("https://llm.example.com/v1 ", "spaces"),
        (" https://llm.example.com/v1", "spaces"),
    ):
        r = await gw.client.put(path, json=upstream(broken), headers=ADMIN)
        assert r.status_code == 422, broken
        assert r.json()["error"]["param"] == "base_url" and says in r.text, r.text
    for body in (listed.text, r.text):
        assert KEY not in body
    audit = await gw.client.get(f"/admin/audit?tenant_id={tenant.id}", headers=ADMIN)
    assert "upstream.create" in audit.text and "upstream.put" in audit.text
    assert KEY not in audit.text
    engine = create_async_engine(database_url)
    try:
        async with engine.connect() as conn:
            rows = (await conn.execute(text("SELECT * FROM tenant_upstreams"))).all()
    finally:
        await engine.dispose()
    assert rows and KEY not in " ".join(str(value) for row in rows for value in row)
    # Another tenant cannot see or delete it: its own namespace has no such upstream.
    other = await gw.create_tenant("someone-else")
    other_path = f"/admin/tenants/{other.id}/upstreams/mine"
    assert (await gw.client.get(other_path, headers=ADMIN)).status_code == 404
    assert (await gw.client.delete(other_path, headers=ADMIN)).status_code == 404
    assert (await gw.client.delete(path, headers=ADMIN)).status_code == 204
    assert (await gw.client.get(path, headers=ADMIN)).status_code == 404


async def test_an_agent_runs_on_its_tenants_upstream(gw: Gateway) -> None:
    async with receiver() as refusing:
        refusing.handlers["/v1/chat/completions"] = answering(400, '{"error": "no"}')
        await _runs_on_its_upstream(gw, refusing.url("/v1"))


async def _runs_on_its_upstream(gw: Gateway, refusing_url: str) -> None:
    tenant = await gw.create_tenant("own-model")
    agent_path = f"/admin/tenants/{tenant.id}/agents/assistant"
    r = await gw.client.put(agent_path, json=agent_on("mine"), headers=ADMIN)
    assert r.status_code == 422 and r.json()["error"]["code"] == "upstream_not_found"
    up_path = f"/admin/tenants/{tenant.id}/upstreams/mine"
    r = await gw.client.put(up_path, json=upstream(gw.mock_url), headers=ADMIN)
    assert r.status_code == 201
    assert (await gw.client.put(agent_path, json=agent_on("mine"), headers=ADMIN)).is_success
    run = await gw.client.post(
        "/v1/agents/assistant/runs", json={"input": "on my own upstream"}, headers=tenant.headers
    )
    assert run.status_code == 200, run.text
    assert run.json()["output"] == "Mock answer to: on my own upstream"
    r = await gw.client.delete(up_path, headers=ADMIN)
    assert r.status_code == 409 and r.json()["error"]["code"] == "upstream_in_use"
    # A change applies to the next run: the upstream now points at one that refuses.
    r = await gw.client.put(up_path, json=upstream(refusing_url), headers=ADMIN)
    assert r.status_code == 200
    run = await gw.client.post(
        "/v1/agents/assistant/runs", json={"input": "again"}, headers=tenant.headers
    )
    assert run.status_code == 502, run.text


async def test_a_stored_upstream_url_no_client_can_use_is_a_502_that_holds_no_slot(
    gw: Gateway, database_url: str
) -> None:
    """A base URL stored before the PUT checks refused it (`https://☃.example`: no IDNA 2008
    encoding) fails the run with a 502, not a 500, and the run's concurrency slot and token
    reservation are given back at once (they were held until the lease expired)."""
    tenant = await gw.create_tenant("odd-url")
    limits = {"max_concurrent_runs": 1, "tokens_per_minute": 100_000}
    r = await gw.client.patch(f"/admin/tenants/{tenant.id}", json={"limits": limits}, headers=ADMIN)
    assert r.status_code == 200, r.text
    path = f"/admin/tenants/{tenant.id}/upstreams/odd"
    r = await gw.client.put(path, json=upstream("https://\u2603.example/v1"), headers=ADMIN)
    assert r.status_code == 422 and "IDNA" in r.text, r.text
    r = await gw.client.put(path, json=upstream("https://llm.example.com/v1"), headers=ADMIN)
    assert r.status_code == 201, r.text
    engine = create_async_engine(database_url)
    try:
        async with engine.begin() as conn:
            await conn.execute(
                text("UPDATE tenant_upstreams SET base_url = :url, version = version + 1"),
                {"url": "https://\u2603.example/v1"},
            )
    finally:
        await engine.dispose()
    r = await gw.client.put(
        f"/admin/tenants/{tenant.id}/agents/assistant", json=agent_on("odd"), headers=ADMIN
    )
    assert r.status_code in (200, 201), r.text
    for _ in range(3):
        r = await gw.client.post(
            "/v1/agents/assistant/runs", json={"input": "hi"}, headers=tenant.headers
        )
        assert r.status_code == 502, r.text
        assert r.json()["error"]["code"] == "upstream_unreachable"
    limits = (await gw.client.get("/v1/limits", headers=tenant.headers)).json()["windows"]
    assert limits["max_concurrent_runs"]["used"] == 0
    assert limits["tokens_per_minute"]["used"] == 0


async def test_the_tenant_key_is_what_the_upstream_receives(gw: Gateway) -> None:
    async with receiver() as fake:
        fake.handlers["/v1/chat/completions"] = answering(401, '{"error": "nope"}')
        tenant = await gw.create_tenant("keyed")
        await gw.client.put(
            f"/admin/tenants/{tenant.id}/upstreams/mine",
            json=upstream(fake.url("/v1")),
            headers=ADMIN,
        )
        await gw.client.put(
            f"/admin/tenants/{tenant.id}/agents/assistant", json=agent_on("mine"), headers=ADMIN
        )
        run = await gw.client.post(
            "/v1/agents/assistant/runs", json={"input": "hi"}, headers=tenant.headers
        )
        assert run.status_code == 502
        assert KEY not in run.text
        assert fake.requests[0].headers["Authorization"] == f"Bearer {KEY}"


async def test_allowed_models_bound_agents_at_put_and_at_run_time(gw: Gateway) -> None:
    tenant = await gw.create_tenant("bounded")
    tenant_path = f"/admin/tenants/{tenant.id}"
    r = await gw.client.patch(tenant_path, json={"allowed_models": ["mock-model"]}, headers=ADMIN)
    assert r.status_code == 200 and r.json()["allowed_models"] == ["mock-model"]
    r = await gw.client.put(
        f"{tenant_path}/agents/other", json=agent_on(None, "gpt-5"), headers=ADMIN
    )
    assert r.status_code == 422 and r.json()["error"]["code"] == "model_not_allowed"
    runs = "/v1/agents/assistant/runs"
    assert (await gw.client.post(runs, json={"input": "hi"}, headers=tenant.headers)).is_success
    await gw.client.patch(tenant_path, json={"allowed_models": ["gpt-5"]}, headers=ADMIN)
    r = await gw.client.post(runs, json={"input": "hi"}, headers=tenant.headers)
    assert r.status_code == 403 and r.json()["error"]["code"] == "model_not_allowed"
    r = await gw.client.patch(tenant_path, json={"allowed_models": None}, headers=ADMIN)
    assert r.json()["allowed_models"] is None
    assert (await gw.client.post(runs, json={"input": "hi"}, headers=tenant.headers)).is_success


async def test_an_upstream_change_reaches_another_replica_within_1s(
    database_url: str, mock_llm_base_url: str, redis_settings: dict[str, str]
) -> None:
    async with receiver() as refusing:
        refusing.handlers["/v1/chat/completions"] = answering(400, '{"error": "no"}')
        await _replicated(database_url, mock_llm_base_url, redis_settings, refusing.url("/v1"))


async def _replicated(
    database_url: str, mock_llm_base_url: str, redis_settings: dict[str, str], refusing_url: str
) -> None:
    settings = {"egress_allow": "127.0.0.0/8", "principal_cache_ttl_s": 5.0, **redis_settings}
    async for one in gateway_for(database_url, mock_llm_base_url, **settings):
        async for two in gateway_for(database_url, mock_llm_base_url, **settings):
            await _wait_subscribed(one, two)
            tenant = await one.create_tenant("replicated")
            up_path = f"/admin/tenants/{tenant.id}/upstreams/mine"
            await one.client.put(up_path, json=upstream(mock_llm_base_url), headers=ADMIN)
            await one.client.put(
                f"/admin/tenants/{tenant.id}/agents/assistant",
                json=agent_on("mine"),
                headers=ADMIN,
            )
            runs = "/v1/agents/assistant/runs"
            r = await two.client.post(runs, json={"input": "hi"}, headers=tenant.headers)
            assert r.status_code == 200  # replica two now caches the upstream
            await one.client.put(up_path, json=upstream(refusing_url), headers=ADMIN)
            changed = time.monotonic()
            while True:
                r = await two.client.post(runs, json={"input": "hi"}, headers=tenant.headers)
                if r.status_code == 502:
                    break
                assert time.monotonic() - changed < 1.0, "replica two still used the old upstream"


async def _wait_subscribed(*gateways: Gateway) -> None:
    async with asyncio.timeout(10):
        for gateway in gateways:
            await gateway.app.state.invalidation.subscribed.wait()


async def test_concurrent_puts_each_bump_the_version_and_the_last_one_is_served(
    gw: Gateway,
) -> None:
    """Replicas cache one client per (upstream, version): two PUTs that landed with the same
    version left the loser's URL or key in use. Each PUT now gets its own version, and the
    stored upstream is the one with the highest."""
    import asyncio

    tenant = await gw.create_tenant("racing-puts")
    path = f"/admin/tenants/{tenant.id}/upstreams/mine"
    r = await gw.client.put(path, json=upstream("https://llm.example.com/v1"), headers=ADMIN)
    assert r.status_code == 201, r.text
    urls = [f"https://llm{i}.example.com/v1" for i in range(6)]
    answers = await asyncio.gather(
        *(gw.client.put(path, json=upstream(url), headers=ADMIN) for url in urls)
    )
    assert all(a.status_code == 200 for a in answers), [a.text for a in answers]
    versions = {a.json()["version"]: a.json()["base_url"] for a in answers}
    assert sorted(versions) == [2, 3, 4, 5, 6, 7]
    stored = (await gw.client.get(path, headers=ADMIN)).json()
    assert stored["version"] == 7
    assert stored["base_url"] == versions[7]


async def test_a_short_key_is_never_shown(gw: Gateway) -> None:
    """`…` + the last 4 of a 4-character key was the whole key."""
    tenant = await gw.create_tenant("short-key")
    path = f"/admin/tenants/{tenant.id}/upstreams/local"
    body = {"base_url": "https://llm.example.com/v1", "api_key": "EMPTY"}
    r = await gw.client.put(path, json=body, headers=ADMIN)
    assert r.status_code == 201, r.text
    assert r.json()["api_key"] == "…"
    assert (await gw.client.get(path, headers=ADMIN)).json()["api_key"] == "…"
    assert "EMPTY" not in (await gw.client.get(path, headers=ADMIN)).text


@pytest.fixture(params=["lean", "openai"])
async def either_client(
    request: pytest.FixtureRequest, sqlite_url: str, mock_llm_base_url: str
) -> AsyncIterator[Gateway]:
    """A gateway on the lean upstream client, and on the stock one."""
    async for gateway in gateway_for(
        sqlite_url, mock_llm_base_url, egress_allow="127.0.0.0/8", upstream_client=request.param
    ):
        yield gateway


async def test_an_upstream_the_egress_guard_refuses_at_connect_is_not_retried(
    either_client: Gateway,
) -> None:
    """A name that resolves to a private address: the refusal is final (retrying it only made
    the client wait through the backoff), and the 502 says why, on either upstream client."""
    gw = either_client
    tenant = await gw.create_tenant("refused-upstream")
    gw.app.state.upstreams.resolver = StaticResolver({"llm.example.test": ["10.20.30.40"]})
    path = f"/admin/tenants/{tenant.id}/upstreams/inside"
    r = await gw.client.put(path, json=upstream("https://llm.example.test/v1"), headers=ADMIN)
    assert r.status_code == 201, r.text
    r = await gw.client.put(
        f"/admin/tenants/{tenant.id}/agents/assistant", json=agent_on("inside"), headers=ADMIN
    )
    assert r.status_code in (200, 201), r.text
    before = parse_metrics((await gw.client.get("/metrics")).text)
    started = time.monotonic()
    r = await gw.client.post(
        "/v1/agents/assistant/runs", json={"input": "hi"}, headers=tenant.headers
    )
    elapsed = time.monotonic() - started
    assert r.status_code == 502, r.text
    error = r.json()["error"]
    assert error["code"] == "upstream_unreachable"
    assert "not allowed" in error["message"] and "private address" in error["message"], error
    after = parse_metrics((await gw.client.get("/metrics")).text)
    refusals = total(after, "gateway_egress_refusals_total", stage="connect") - total(
        before, "gateway_egress_refusals_total", stage="connect"
    )
    assert refusals == 1  # tried once: retried, it was 3
    assert elapsed < 0.4, elapsed  # no backoff (0.5 s, then 1 s)
