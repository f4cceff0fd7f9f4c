"""The TTL cache: expiry, size bound, and one load for many concurrent misses."""

from __future__ import annotations

import asyncio
import time

import pytest

from gateway.core.cache import TTLCache


def test_entries_expire_and_size_is_bounded() -> None:
    cache: TTLCache[str, int] = TTLCache(ttl_s=0.05, max_size=2)
    cache.put("a", 1)
    cache.put("b", 2)
    cache.put("c", 3)
    assert cache.get("a") is None and cache.get("c") == 3 and len(cache) == 2
    time.sleep(0.06)
    assert cache.get("b") is None and cache.get("c") is None


async def test_concurrent_misses_share_one_load() -> None:
    cache: TTLCache[str, int] = TTLCache(ttl_s=10, max_size=10)
    calls = 0

    async def load() -> int:
        nonlocal calls
        calls += 1
        await asyncio.sleep(0.02)
        return 42

    results = await asyncio.gather(*(cache.get_or_load("k", load) for _ in range(50)))
    assert results == [42] * 50 and calls == 1
    assert await cache.get_or_load("k", load) == 42 and calls == 1


async def test_a_failed_load_fails_every_waiter_and_is_not_cached() -> None:
    cache: TTLCache[str, int] = TTLCache(ttl_s=10, max_size=10)
    calls = 0

    async def load() -> int:
        nonlocal calls
        calls += 1
        await asyncio.sleep(0.01)
        raise LookupError("nope")

    results = await asyncio.gather(
        *(cache.get_or_load("k", load) for _ in range(5)), return_exceptions=True
    )
    assert all(isinstance(r, LookupError) for r in results) and calls == 1
    with pytest.raises(LookupError):
        await cache.get_or_load("k", load)
    assert calls == 2
