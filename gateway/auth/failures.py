"""Rate limit of failed authentications per client address.

Every failure (malformed, unknown, expired or revoked key, bad JWT, bad login) counts against
the client address in a fixed window; past `GATEWAY_AUTH_FAILURE_LIMIT` for tenant
credentials (`GATEWAY_ADMIN_AUTH_FAILURE_LIMIT` for admin ones) the address gets 429
with `Retry-After` until the window ends, *before* any database look-up. The check is a dict
look-up in process memory (no I/O on the request path); failures are also counted in Redis when
configured, so an address failing on several replicas is blocked by the shared count. Memory is
bounded: at `max_addresses` tracked addresses the oldest window's entries are dropped.
"""

from __future__ import annotations

import logging
import time

from redis.asyncio import Redis
from redis.exceptions import RedisError

from gateway.core.errors import RateLimitedError
from tenants.admin.failures import ADMIN_BUCKET

logger = logging.getLogger("gateway.auth")


class AuthFailureLimiter:
    """Counts failures per address; `check` refuses blocked addresses (429)."""

    def __init__(
        self,
        *,
        limit: int,
        window_s: int,
        redis: Redis | None = None,
        key_prefix: str = "gw:",
        max_addresses: int = 100_000,
        admin_limit: int | None = None,
    ) -> None:
        self.limit = limit
        """Failures of tenant credentials allowed per address and window."""
        self.admin_limit = limit if admin_limit is None else admin_limit
        """Failures of admin credentials (their `ADMIN_BUCKET` buckets) allowed."""
        self.window_s = window_s
        self._redis = redis
        self._prefix = f"{key_prefix}authfail:"
        self._max = max_addresses
        self._counts: dict[str, tuple[int, int]] = {}
        self._blocked: dict[str, float] = {}

    def check(self, address: str) -> None:
        """Raise 429 if the address is blocked (no I/O)."""
        until = self._blocked.get(address)
        if until is None:
            return
        now = time.time()
        if until <= now:
            self._blocked.pop(address, None)
            return
        raise RateLimitedError(
            "Too many failed authentication attempts; retry later.",
            code="auth_failures",
            retry_after_s=until - now,
        )

    async def failed(self, address: str) -> None:
        """Count one failure of the address (and block it once over the limit)."""
        now = time.time()
        window = int(now // self.window_s)
        seen_window, count = self._counts.get(address, (window, 0))
        count = count + 1 if seen_window == window else 1
        if address not in self._counts and len(self._counts) >= self._max:
            self._prune(window)
        self._counts[address] = (window, count)
        if self._redis is not None:
            count = max(count, await self._shared_count(address, window))
        limit = self.admin_limit if address.startswith(ADMIN_BUCKET) else self.limit
        if count >= limit:
            self._blocked[address] = (window + 1) * self.window_s

    async def _shared_count(self, address: str, window: int) -> int:
        key = f"{self._prefix}{address}:{window}"
        try:
            async with self._redis.pipeline(transaction=False) as pipe:  # type: ignore[union-attr]
                pipe.incr(key)
                pipe.expire(key, self.window_s * 2)
                shared, _ = await pipe.execute()
        except (RedisError, OSError) as exc:
            logger.warning("auth failure count: Redis unavailable (%s)", type(exc).__name__)
            return 0
        return int(shared)

    def _prune(self, window: int) -> None:
        self._counts = {a: c for a, c in self._counts.items() if c[0] == window}
        if len(self._counts) >= self._max:
            self._counts.clear()
        now = time.time()
        self._blocked = {a: t for a, t in self._blocked.items() if t > now}
