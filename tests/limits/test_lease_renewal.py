"""A run keeps its concurrency lease for as long as it is in flight, even when one model call
outlasts the lease TTL; once it ends, the slot comes back at once."""

from __future__ import annotations

import asyncio

import pytest
import redis.asyncio as aioredis

from tests.gateway.conftest import gateway_for
from tests.limits.conftest import limited_tenant

RUN = "/v1/agents/assistant/runs"


async def test_a_model_call_longer_than_the_lease_ttl_keeps_the_lease(
    sqlite_url: str, mock_llm_base_url: str, redis_settings: dict[str, str]
) -> None:
    ttl = 0.6
    async for gw in gateway_for(
        sqlite_url, mock_llm_base_url, limits_lease_ttl_s=ttl, **redis_settings
    ):
        tenant = await limited_tenant(gw, "long-calls", max_concurrent_runs=1)
        slow = asyncio.create_task(
            gw.client.post(RUN, json={"input": "hello [[latency:2500]]"}, headers=tenant.headers)
        )
        lease_key = gw.app.state.quotas.redis.keys(tenant.id)[0]
        client = aioredis.Redis.from_url(redis_settings["redis_url"])
        try:
            for _ in range(100):  # until the slow run holds its lease
                if await client.zcard(lease_key) == 1:
                    break
                await asyncio.sleep(0.02)
            # Well past the TTL, inside the one long model call: the lease is still held...
            await asyncio.sleep(3 * ttl)
            assert await client.zcard(lease_key) == 1
            r = await gw.client.post(RUN, json={"input": "second"}, headers=tenant.headers)
            assert r.status_code == 429, r.text
            assert r.json()["error"]["code"] == "concurrent_runs"
            assert int(r.headers["retry-after"]) >= 1
            # ...and released as soon as the run ends.
            first = await slow
            assert first.status_code == 200, first.text
            assert await client.zcard(lease_key) == 0
            r = await gw.client.post(RUN, json={"input": "third"}, headers=tenant.headers)
            assert r.status_code == 200, r.text
        finally:
            if not slow.done():
                slow.cancel()
            await client.aclose()


async def test_a_ticket_dropped_without_close_is_not_renewed(
    redis_url: str, redis_prefix: str
) -> None:
    """A run that is still referenced keeps its lease past the TTL; a ticket that was dropped
    without `close()` (a bug) stops being renewed, so its slot comes back by TTL."""
    import gc

    from gateway.auth.principal import Principal
    from gateway.core.config import Settings
    from gateway.core.errors import RateLimitedError
    from gateway.core.redis import create_redis
    from gateway.limits.breaker import RedisBreaker
    from gateway.limits.quotas import QuotaService

    settings = Settings(
        redis_url=redis_url,
        redis_key_prefix=redis_prefix,
        limits_lease_ttl_s=1.0,
        redis_timeout_ms=1000,  # a slow CI machine must not time a renewal out
    )
    redis = create_redis(settings, caller_timeouts=True)
    assert redis is not None
    quotas = QuotaService(settings, redis, RedisBreaker(retry_s=1.0, fail_open=False))
    who = Principal(
        tenant_id="ten_dropped",
        tenant_slug="dropped",
        tenant_status="active",
        key_id="k",
        scopes=frozenset({"runs"}),
        limits={"max_concurrent_runs": 2},
    )
    quotas.start()
    try:
        kept = await quotas.open(who, "run_kept", None, None)
        dropped = await quotas.open(who, "run_dropped", None, None)
        del dropped
        gc.collect()
        await asyncio.sleep(2.5)  # two and a half TTLs
        # The dropped run's slot expired; the kept run's was renewed: one slot is free.
        third = await quotas.open(who, "run_third", None, None)
        with pytest.raises(RateLimitedError) as full:
            await quotas.open(who, "run_fourth", None, None)
        assert full.value.code == "concurrent_runs"
        await third.close()
        await kept.close()
    finally:
        await quotas.drain()
        await redis.aclose()
