"""A small in-process TTL cache with a hard size bound.

Used for credentials and agent specs: entries are trusted for `ttl_s` seconds, so a change in
the database (revocation, suspension, a new agent version) is seen within that bound on every
replica even without an invalidation message.
"""

from __future__ import annotations

import time
from typing import Generic, TypeVar

K = TypeVar("K")
V = TypeVar("V")


class TTLCache(Generic[K, V]):
    """Mapping with per-entry expiry; the oldest entries go first when full."""

    def __init__(self, *, ttl_s: float, max_size: int) -> None:
        self.ttl_s = ttl_s
        self.max_size = max_size
        self._entries: dict[K, tuple[float, V]] = {}

    def get(self, key: K) -> V | None:
        entry = self._entries.get(key)
        if entry is None:
            return None
        expires, value = entry
        if expires < time.monotonic():
            self._entries.pop(key, None)
            return None
        return value

    def put(self, key: K, value: V) -> None:
        if key not in self._entries and len(self._entries) >= self.max_size:
            self._entries.pop(next(iter(self._entries)))
        self._entries[key] = (time.monotonic() + self.ttl_s, value)

    def discard(self, key: K) -> None:
        self._entries.pop(key, None)

    def clear(self) -> None:
        self._entries.clear()

    def __len__(self) -> int:
        return len(self._entries)
