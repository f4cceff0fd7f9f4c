"""The request window's Redis list against the real Redis: it holds the window's entries only,
whatever the limit, and still decides and counts as the moving window does."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
import redis.asyncio as aioredis

from gateway.limits.requests import WINDOW_S, PerMinute, RedisWindow

T0 = 1_700_000_000.0


@pytest.fixture
async def client(redis_url: str) -> AsyncIterator[aioredis.Redis]:
    client = aioredis.Redis.from_url(redis_url)
    yield client
    await client.aclose()


async def acquire(window: RedisWindow, key: str, at: float, limit: int) -> tuple[int, int, float]:
    acquired, count, oldest = await window._acquire([key], [at, limit, WINDOW_S, 1])
    return int(acquired), int(count), float(oldest)


async def test_entries_older_than_the_window_are_dropped_even_under_a_huge_limit(
    client: aioredis.Redis, redis_prefix: str
) -> None:
    window = RedisWindow(client, redis_prefix)
    key = window.prefix + PerMinute(10**9).key_for("t:ten_big")
    for second in range(100):  # 100 requests over 100 s, one a second
        acquired, count, oldest = await acquire(window, key, T0 + second, 10**9)
        assert acquired == 1
        assert count == min(second + 1, WINDOW_S + 1)  # the window is [now - 60, now]
        assert oldest == T0 + max(0, second - WINDOW_S)
    # Without trimming by time the list kept all 100 (the limit never pushed any out).
    assert await client.llen(key) == WINDOW_S + 1


async def test_the_limit_still_refuses_within_the_window(
    client: aioredis.Redis, redis_prefix: str
) -> None:
    window = RedisWindow(client, redis_prefix)
    key = window.prefix + PerMinute(3).key_for("t:ten_small")
    results = [await acquire(window, key, T0 + i, 3) for i in range(4)]
    assert [r[0] for r in results] == [1, 1, 1, 0]
    assert results[-1][1] == 3  # the refused request is not counted
    # A minute after the first, one slot is free again.
    assert (await acquire(window, key, T0 + WINDOW_S + 0.5, 3))[:2] == (1, 3)
    assert await client.llen(key) == 3
