"""A `limits` Redis storage whose moving-window acquire also returns the window's state.

slowapi's moving window would otherwise need two Redis round trips per request (acquire, then
`get_window_stats` for the headers); `request_window.lua` does both in one. Registered under
the `gateway+redis://` scheme so slowapi builds it from a storage URI like any other storage.
"""

from __future__ import annotations

import time
from importlib.resources import files
from typing import Any

from limits.storage import RedisStorage

SCRIPT = files("gateway.limits").joinpath("scripts/request_window.lua").read_text()
SCHEME = "gateway+"


class WindowRedisStorage(RedisStorage):
    """RedisStorage with a one-round-trip acquire + window stats."""

    STORAGE_SCHEME = ["gateway+redis", "gateway+rediss"]

    def __init__(self, uri: str, **options: Any) -> None:
        self._last: tuple[str, float, int] | None = None
        super().__init__(uri.removeprefix(SCHEME), **options)

    def initialize_storage(self, uri: str) -> None:
        super().initialize_storage(uri)
        self.lua_acquire_with_stats = self.get_connection().register_script(SCRIPT.encode())

    def acquire_entry(self, key: str, limit: int, expiry: int, amount: int = 1) -> bool:
        timestamp = time.time()
        acquired, count, oldest = self.lua_acquire_with_stats(
            [self.prefixed_key(key)], [timestamp, limit, expiry, amount]
        )
        # Read back by the `get_window_stats` that follows on the same (event-loop) thread.
        self._last = (key, float(oldest), int(count))
        return bool(acquired)

    def get_moving_window(self, key: str, limit: int, expiry: int) -> tuple[float, int]:
        last, self._last = self._last, None
        if last is not None and last[0] == key:
            return last[1], last[2]
        return super().get_moving_window(key, limit, expiry)
