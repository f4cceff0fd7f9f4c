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
    refused, count, oldest = await window._acquire([key], [at, WINDOW_S, 1, limit])
    return int(refused == 0), int(count), float(oldest)


async def test_a_request_is_counted_in_every_window_or_in_none(
    client: aioredis.Redis, redis_prefix: str
) -> None:
    """Tenant limit 5, user limit 1: the user's refusals never use up the tenant's window."""
    window = RedisWindow(client, redis_prefix)
    tenant, mallory, bob = (f"{redis_prefix}{n}" for n in ("t", "u:mallory", "u:bob"))
    replies = []
    for i in range(5):
        reply = await window._acquire([tenant, mallory], [T0 + i, WINDOW_S, 1, 5, 1])
        replies.append([int(reply[0]), int(reply[1]), int(reply[3])])
    # The first is admitted (1 in each window); the next four are refused by window 2 (the
    # user's) and counted nowhere.
    assert replies == [[0, 1, 1]] + [[2, 1, 1]] * 4
    for i in range(4):
        reply = await window._acquire([tenant, f"{bob}{i}"], [T0 + 10 + i, WINDOW_S, 1, 5, 1])
        assert int(reply[0]) == 0, i
    # The tenant's window is full now: refused by window 1, and not counted in the user's.
    reply = await window._acquire([tenant, bob], [T0 + 20, WINDOW_S, 1, 5, 1])
    assert (int(reply[0]), int(reply[1]), int(reply[3])) == (1, 5, 0)


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


def reference(entries: list[float], at: float, limit: int) -> tuple[int, int, float]:
    """The moving window in Python (entries newest first, as the list): acquire, then the
    window's count and oldest entry; `entries` is updated to what the window still holds."""
    start = at - WINDOW_S
    acquired = 0
    if not (len(entries) > limit - 1 and entries[limit - 1] >= start):
        entries.insert(0, at)
        del entries[limit:]
        acquired = 1
    entries[:] = [e for e in entries if e >= start]
    return acquired, len(entries), entries[-1] if entries else at


@pytest.mark.parametrize("limit", [5, 40, 10**9])
async def test_the_window_matches_a_moving_window_through_bursts_and_quiet_spells(
    client: aioredis.Redis, redis_prefix: str, limit: int
) -> None:
    """Steady traffic (a few entries expire per call: popped from the tail), bursts, and quiet
    spells longer than the window (many expire at once: trimmed by binary search, or all)."""
    window = RedisWindow(client, redis_prefix)
    key = window.prefix + PerMinute(limit).key_for(f"t:ten_model_{limit}")
    model: list[float] = []
    at = T0
    steps = [0.5] * 150 + [0.0] * 30 + [0.25] * 300 + [61.0] + [0.1] * 50 + [45.0] + [0.2] * 200
    steps += [59.9, 0.05, 120.0, 0.0, 0.0, 3.0]
    for step in steps:
        at += step
        got = await acquire(window, key, at, limit)
        expected = reference(model, at, limit)
        assert got == pytest.approx(expected), f"at +{at - T0:.2f} s"
    assert await client.llen(key) == len(model)


async def test_a_quiet_spell_trims_every_expired_entry_in_one_call(
    client: aioredis.Redis, redis_prefix: str
) -> None:
    window = RedisWindow(client, redis_prefix)
    key = window.prefix + PerMinute(10**9).key_for("t:ten_quiet")
    for i in range(500):  # 500 entries within two seconds
        await acquire(window, key, T0 + i / 250, 10**9)
    # 61 s after the last one: all 500 expired, the new one is the window.
    assert await acquire(window, key, T0 + 2 + WINDOW_S + 1, 10**9) == (1, 1, T0 + 63)
    assert await client.llen(key) == 1
    # Half of a second burst expired: the other half and the new entry remain.
    for i in range(100):
        await acquire(window, key, T0 + 100 + i, 10**9)
    acquired, count, oldest = await acquire(window, key, T0 + 100 + 99 + 10, 10**9)
    assert (acquired, count, oldest) == (1, 52, T0 + 149)  # 149..199, and 209
