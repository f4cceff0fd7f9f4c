"""Redis stopped mid-traffic: open mode keeps serving, closed mode answers 503; never a 500 or
a hang; enforcement in Redis resumes within 5 s of Redis coming back."""

from __future__ import annotations

import asyncio
import secrets
import time
from collections.abc import AsyncIterator
from typing import Any

import httpx
import redis
from prometheus_client import REGISTRY

from tests.gateway.conftest import Gateway, Tenant, gateway_for
from tests.limits.conftest import RedisServer, limited_tenant


async def _traffic(gw: Gateway, headers: dict[str, str], n: int) -> list[httpx.Response]:
    async def one(i: int) -> httpx.Response:
        if i % 2:
            request = gw.client.get("/v1/agents", headers=headers)
        else:
            request = gw.client.post(
                "/v1/agents/assistant/runs", json={"input": f"hi {i}"}, headers=headers
            )
        return await asyncio.wait_for(request, timeout=5)  # never a hang

    return [await one(i) for i in range(n)]


def _redis_keys(server: RedisServer, prefix: str) -> list[bytes]:
    client = redis.Redis(port=server.port, socket_timeout=0.5)
    try:
        return list(client.scan_iter(match=f"{prefix}*"))
    except redis.RedisError:
        return []
    finally:
        client.close()


def degraded_total() -> float:
    return REGISTRY.get_sample_value("gateway_limits_degraded_total") or 0.0


async def _recovered_within(predicate: object, seconds: float) -> float:
    start = time.monotonic()
    while not await predicate():  # type: ignore[operator]
        assert time.monotonic() - start < seconds, "enforcement did not resume in time"
        await asyncio.sleep(0.1)
    return time.monotonic() - start


LIMITS = {"requests_per_minute": 1000, "tokens_per_day": 10**7, "max_concurrent_runs": 10}


async def _serving(
    sqlite_url: str,
    mock_llm_base_url: str,
    redis_server: RedisServer,
    prefix: str,
    mode: str,
    **extra: Any,
) -> AsyncIterator[tuple[Gateway, Tenant]]:
    """A gateway on the private Redis in failure mode `mode`, with a limited tenant whose first
    runs went through Redis."""
    async for gw in gateway_for(
        sqlite_url,
        mock_llm_base_url,
        upstream_api="chat_completions",
        redis_url=redis_server.url,
        redis_key_prefix=prefix,
        limits_failure_mode=mode,
        **extra,
    ):
        tenant = await limited_tenant(gw, "acme", **LIMITS)
        assert {r.status_code for r in await _traffic(gw, tenant.headers, 4)} == {200}
        yield gw, tenant


async def test_open_mode_keeps_serving_and_resumes(
    sqlite_url: str, mock_llm_base_url: str, redis_server: RedisServer
) -> None:
    prefix = f"test:{secrets.token_hex(6)}:"
    async for gw, tenant in _serving(sqlite_url, mock_llm_base_url, redis_server, prefix, "open"):
        assert _redis_keys(redis_server, prefix)
        before = degraded_total()
        redis_server.stop()
        started = time.monotonic()
        responses = await _traffic(gw, tenant.headers, 10)
        assert [r.status_code for r in responses] == [200] * 10
        assert time.monotonic() - started < 8
        assert degraded_total() > before
        r = await gw.client.get("/readyz")
        assert r.status_code == 200 and r.json()["status"] == "degraded"

        redis_server.start()  # empty: no persistence

        async def enforced_in_redis(gw: Gateway = gw, tenant: Tenant = tenant) -> bool:
            r = await gw.client.get("/v1/agents", headers=tenant.headers)
            assert r.status_code == 200
            return bool(_redis_keys(redis_server, prefix))

        assert await _recovered_within(enforced_in_redis, 5) < 5


async def test_closed_mode_answers_503_and_resumes(
    sqlite_url: str, mock_llm_base_url: str, redis_server: RedisServer
) -> None:
    prefix = f"test:{secrets.token_hex(6)}:"
    async for gw, tenant in _serving(sqlite_url, mock_llm_base_url, redis_server, prefix, "closed"):
        redis_server.stop()
        responses = await _traffic(gw, tenant.headers, 10)
        assert [r.status_code for r in responses] == [503] * 10
        for r in responses:
            assert r.json()["error"]["type"] == "service_unavailable"
            assert r.json()["error"]["code"] == "limits_unavailable"
            assert int(r.headers["retry-after"]) >= 1
        r = await gw.client.get("/readyz")
        assert r.status_code == 503

        redis_server.start()

        async def serving(gw: Gateway = gw, tenant: Tenant = tenant) -> bool:
            r = await gw.client.get("/v1/agents", headers=tenant.headers)
            assert r.status_code in (200, 503)
            return r.status_code == 200

        assert await _recovered_within(serving, 5) < 5
        assert {r.status_code for r in await _traffic(gw, tenant.headers, 4)} == {200}
        r = await gw.client.get("/readyz")
        assert r.status_code == 200


async def test_the_budget_recount_waits_while_redis_is_away(
    sqlite_url: str, mock_llm_base_url: str, redis_server: RedisServer
) -> None:
    """The periodic recount of the day windows (GATEWAY_LIMITS_BUDGET_RECOUNT_S) skips its
    passes while Redis is away: each would fall back to memory for every budgeted tenant,
    counted as degraded checks no request made."""
    prefix = f"test:{secrets.token_hex(6)}:"
    served = _serving(
        sqlite_url, mock_llm_base_url, redis_server, prefix, "open", limits_budget_recount_s=0.1
    )
    async for gw, _ in served:
        await gw.flush_usage()  # the tenant's runs are in the records: a pass has work
        redis_server.stop()
        r = await gw.client.get("/readyz")
        assert r.json()["status"] == "degraded"
        await asyncio.sleep(0.3)  # the first pass finds Redis gone (one fallback, counted)
        before = degraded_total()
        await asyncio.sleep(1.0)  # ten more passes: skipped
        assert degraded_total() == before
        redis_server.start()
