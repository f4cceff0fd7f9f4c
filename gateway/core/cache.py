"""A small in-process TTL cache with a hard size bound and single-flight loading.

Used for credentials and agent specs: entries are trusted for `ttl_s` seconds, so a change in
the database (revocation, suspension, a new agent version) is seen within that bound on every
replica even without an invalidation message.

With `stale_s`, an expired entry is kept that much longer and served when reloading it fails
because the database is unavailable (stale-if-error): cached credentials keep serving runs
through a short outage. An invalidation still drops the entry at once.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Generic, TypeVar

from gateway.core.db import is_database_unavailable

K = TypeVar("K")
V = TypeVar("V")


class TTLCache(Generic[K, V]):
    """Mapping with per-entry expiry; the oldest entries go first when full."""

    def __init__(self, *, ttl_s: float, max_size: int, stale_s: float = 0.0) -> None:
        self.ttl_s = ttl_s
        self.max_size = max_size
        self.stale_s = stale_s
        self._entries: dict[K, tuple[float, V]] = {}
        self._loading: dict[K, asyncio.Future[V]] = {}

    def get(self, key: K) -> V | None:
        entry = self._entries.get(key)
        if entry is None:
            return None
        expires, value = entry
        now = time.monotonic()
        if expires < now:
            if expires + self.stale_s < now:
                self.discard(key)
            return None
        return value

    def _usable_stale(self, key: K) -> V | None:
        """An expired entry still within `stale_s` (served when a reload cannot reach the DB)."""
        entry = self._entries.get(key)
        if entry is None or entry[0] + self.stale_s < time.monotonic():
            return None
        return entry[1]

    def put(self, key: K, value: V) -> None:
        if key not in self._entries and len(self._entries) >= self.max_size:
            self._entries.pop(next(iter(self._entries)))
        self._entries[key] = (time.monotonic() + self.ttl_s, value)

    async def get_or_load(self, key: K, load: Callable[[], Awaitable[V]]) -> V:
        """The cached value, or the result of `load()`; concurrent misses share one load.

        When an entry expires under load, only one task goes to the database; the others wait
        for its result. A failed load is not cached and fails every waiter the same way.
        """
        value = self.get(key)
        if value is not None:
            return value
        pending = self._loading.get(key)
        if pending is None:
            pending = asyncio.ensure_future(load())
            self._loading[key] = pending
            pending.add_done_callback(lambda done: self._settle(key, done))
        # shield: one waiter giving up (client gone) must not cancel the load for the others.
        try:
            return await asyncio.shield(pending)
        except Exception as error:
            stale = self._usable_stale(key) if self.stale_s > 0 else None
            if stale is None or not is_database_unavailable(error):
                raise
            return stale

    def _settle(self, key: K, done: asyncio.Future[V]) -> None:
        self._loading.pop(key, None)
        if not done.cancelled() and done.exception() is None:
            self.put(key, done.result())

    def discard(self, key: K) -> None:
        self._entries.pop(key, None)

    def discard_where(self, predicate: Callable[[K], bool]) -> None:
        """Drop every entry whose key matches (a scan: for rare, targeted invalidations)."""
        for key in [key for key in self._entries if predicate(key)]:
            self.discard(key)

    def clear(self) -> None:
        self._entries.clear()

    def __len__(self) -> int:
        return len(self._entries)
