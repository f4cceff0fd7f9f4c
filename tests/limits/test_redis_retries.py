"""A Redis quota step that times out is tried again until Redis's counters hold the real usage:
a settlement that never reached Redis lands later, and an admission or reservation that Redis
did apply while its reply came too late (a loaded host) is given back, since the run went on
in memory. Against the real Redis; the gateway's own process is what stalls."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
import redis.asyncio as aioredis

from gateway.auth.principal import Principal
from gateway.core.config import Settings
from gateway.core.redis import create_redis
from gateway.limits.breaker import RedisBreaker
from gateway.limits.memory import MemoryQuotaStore
from gateway.limits.quotas import QuotaService
from gateway.limits.redis_store import RedisQuotaStore
from tests.waiting import eventually

TENANT = "ten_retry"
WHO = Principal(
    tenant_id=TENANT,
    tenant_slug="retry",
    tenant_status="active",
    key_id="k",
    scopes=frozenset({"runs"}),
    limits={"tokens_per_day": 10_000, "max_concurrent_runs": 5},
)
STALL_S = 1.0
"""Longer than the time box (50 ms; its hard limit 500 ms)."""


@pytest.fixture
async def quotas(redis_url: str, redis_prefix: str) -> AsyncIterator[QuotaService]:
    settings = Settings(
        redis_url=redis_url,
        redis_key_prefix=redis_prefix,
        redis_timeout_ms=50,
        limits_redis_retry_s=0.5,
    )
    redis = create_redis(settings, caller_timeouts=True)
    assert redis is not None
    service = QuotaService(settings, redis, RedisBreaker(retry_s=0.5, fail_open=True))
    try:
        yield service
    finally:
        await service.drain()
        await redis.aclose()


@pytest.fixture
async def client(redis_url: str) -> AsyncIterator[aioredis.Redis]:
    client = aioredis.Redis.from_url(redis_url)
    yield client
    await client.aclose()


class Counters:
    def __init__(self, client: aioredis.Redis, store: RedisQuotaStore) -> None:
        self.client = client
        self.lease, self.resv, _, tpd = store.keys(TENANT)
        self.tpd = tpd + str(int(time.time()) // 86_400)

    async def now(self) -> tuple[int, int, int]:
        """(tokens counted today, leases held, reservations open) in Redis."""
        used = int(await self.client.get(self.tpd) or 0)
        return (
            used,
            int(await self.client.zcard(self.lease)),
            int(await self.client.zcard(self.resv)),
        )


def stall_once(monkeypatch: pytest.MonkeyPatch, method: str, *, after: bool) -> Callable[[], int]:
    """The first call of `RedisQuotaStore.<method>` stalls past the time box, before sending
    (Redis never sees it) or after Redis answered (the reply comes too late)."""
    original = getattr(RedisQuotaStore, method)
    calls = 0

    async def stalled(self: RedisQuotaStore, *args: Any, **kwargs: Any) -> Any:
        nonlocal calls
        calls += 1
        if calls == 1 and not after:
            await asyncio.sleep(STALL_S)
        result = await original(self, *args, **kwargs)
        if calls == 1 and after:
            await asyncio.sleep(STALL_S)
        return result

    monkeypatch.setattr(RedisQuotaStore, method, stalled)
    return lambda: calls


async def settled_to(counters: Counters, expected: tuple[int, int, int]) -> None:
    async def holds() -> bool:
        return await counters.now() == expected

    await eventually(holds, timeout=10, what=f"Redis counters at {expected}")


async def test_a_settlement_that_never_reached_redis_lands_later(
    quotas: QuotaService, client: aioredis.Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert quotas.redis is not None
    counters = Counters(client, quotas.redis)
    ticket = await quotas.open(WHO, "run_1", 100, 20)
    await ticket.before_call(100, 20, ticket.price)
    assert await counters.now() == (120, 1, 1)  # the estimate, a lease, the reservation
    await ticket.after_call(50)
    calls = stall_once(monkeypatch, "release", after=False)
    await ticket.close()
    assert await counters.now() == (120, 1, 1)  # the step timed out before Redis saw it
    await settled_to(counters, (50, 0, 0))  # the real usage, nothing held
    assert calls() == 2


async def test_an_admission_whose_reply_came_too_late_is_given_back(
    quotas: QuotaService, client: aioredis.Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert quotas.redis is not None
    counters = Counters(client, quotas.redis)
    stall_once(monkeypatch, "admit", after=True)
    ticket = await quotas.open(WHO, "run_1", 100, 20)
    # Redis admitted it, but the run goes on in this replica's memory...
    assert isinstance(ticket.lease_store, MemoryQuotaStore)
    assert await counters.now() == (120, 1, 1)
    # ...so Redis gives back the lease and the reservation nobody would settle.
    await settled_to(counters, (0, 0, 0))
    await ticket.before_call(100, 20, ticket.price)
    await ticket.after_call(50)
    await ticket.close()
    assert await counters.now() == (0, 0, 0)
    # Redis enforces again, with nothing counted twice.
    again = await quotas.open(WHO, "run_2", 100, 20)
    assert again.lease_store is quotas.redis
    assert await counters.now() == (120, 1, 1)
    await again.close()
    assert await counters.now() == (0, 0, 0)


async def test_a_reservation_whose_reply_came_too_late_is_given_back_once(
    quotas: QuotaService, client: aioredis.Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert quotas.redis is not None
    counters = Counters(client, quotas.redis)
    ticket = await quotas.open(WHO, "run_1", 100, 20)
    await ticket.before_call(100, 20, ticket.price)  # the admission's reservation
    await ticket.after_call(50)
    stall_once(monkeypatch, "reserve", after=True)
    await ticket.before_call(100, 20, ticket.price)  # settles the first call, reserves the second
    assert ticket.open_reservations[-1][1] is quotas.memory
    assert await counters.now() == (50 + 120, 1, 1)
    # The second call's reservation is given back; the first call's settlement is not applied
    # again: Redis ends at the real usage of the one call it saw.
    await settled_to(counters, (50, 1, 0))
    await ticket.after_call(40)
    await ticket.close()
    assert await counters.now() == (50, 0, 0)


async def test_shutdown_gives_a_pending_step_one_last_try(
    quotas: QuotaService, client: aioredis.Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert quotas.redis is not None and quotas.retries is not None
    counters = Counters(client, quotas.redis)
    ticket = await quotas.open(WHO, "run_1", 100, 20)
    await ticket.before_call(100, 20, ticket.price)
    await ticket.after_call(50)
    stall_once(monkeypatch, "release", after=False)
    await ticket.close()
    assert quotas.retries.pending == 1
    started = time.monotonic()
    await quotas.drain()  # without waiting out the breaker's retry interval
    assert time.monotonic() - started < 0.5
    assert quotas.retries.pending == 0 and quotas.retries.given_up == 0
    assert await counters.now() == (50, 0, 0)
