"""Rate limit of failed authentications per client address.

Every failure (malformed, unknown, expired or revoked key, bad JWT, bad login) counts against
the client address in a fixed window; past `GATEWAY_AUTH_FAILURE_LIMIT` for tenant
credentials (`GATEWAY_ADMIN_AUTH_FAILURE_LIMIT` for admin ones) the address gets 429
with `Retry-After` until the window ends, *before* any database look-up. The check is a dict
look-up in process memory (no I/O on the request path); failures are also counted in Redis when
configured, so an address failing on several replicas is blocked by the shared count. Memory is
bounded: at `max_addresses` tracked addresses the oldest window's entries are dropped.

A block stops guesses, not the address's other clients: an API key this replica resolved in
the last `VOUCHED_S` (its HMAC is kept, at most `MAX_VOUCHED` of them) is still looked up
from a blocked address, so one misbehaving client behind a shared address (NAT, a proxy not
in `GATEWAY_FORWARDED_ALLOW_IPS`) does not lock out the tenants whose valid keys share it once
their principals fall out of the 2 s cache. The look-up still checks revocation and expiry.
"""

from __future__ import annotations

import logging
import time
from collections import OrderedDict

from redis.asyncio import Redis
from redis.exceptions import RedisError

from gateway.core.errors import RateLimitedError
from tenants.admin.failures import ADMIN_BUCKET

logger = logging.getLogger("gateway.auth")


VOUCHED_S = 900.0
"""How long a key resolved on this replica still passes a block of its address."""
MAX_VOUCHED = 10_000


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
        self._vouched: OrderedDict[str, float] = OrderedDict()
        """HMACs of keys resolved lately -> when (oldest first)."""

    def vouch(self, key_hash: str) -> None:
        """`key_hash` resolved to a principal: it passes blocks for `VOUCHED_S`."""
        self._vouched[key_hash] = time.monotonic()
        self._vouched.move_to_end(key_hash)
        if len(self._vouched) > MAX_VOUCHED:
            self._vouched.popitem(last=False)

    def forget(self, key_hash: str) -> None:
        """`key_hash` no longer resolves (revoked, its tenant gone): it passes no block."""
        self._vouched.pop(key_hash, None)

    def check(self, address: str, key_hash: str | None = None) -> None:
        """Raise 429 if the address is blocked (no I/O), unless `key_hash` is a key resolved
        here lately."""
        until = self._blocked.get(address)
        if until is None:
            return
        now = time.time()
        if until <= now:
            self._blocked.pop(address, None)
            return
        vouched = None if key_hash is None else self._vouched.get(key_hash)
        if vouched is not None and time.monotonic() - vouched < VOUCHED_S:
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
