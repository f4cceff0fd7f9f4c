"""Request limits per tenant and per end user: a moving window of one minute.

The limit values come from the tenant's `limits` on the principal (cached ≤ 5 s, so a PATCH
takes effect within seconds on every replica); a tenant without `requests_per_minute` is
counted against `GATEWAY_LIMITS_REQUESTS_PER_MINUTE_CEILING`, so every `/v1` response carries
the request headers (SPEC §6). Keys: `t:<tenant id>` and `u:<tenant id>:<sub>`.
With `GATEWAY_REDIS_URL` each limit is one async round trip: `request_window.lua` acquires in
the window and answers its state (for the headers) at once, time-boxed by
`GATEWAY_REDIS_TIMEOUT_MS` and behind the Redis breaker shared with the quotas; nothing blocks
the event loop. Without Redis, or while Redis is away in `open` mode, the `limits` library's
in-process moving window counts (memory, no I/O).

The Redis keys are the ones the earlier slowapi storage used (`<prefix>rl:LIMITER/<key>/MINUTE`, a
list of timestamps), so replicas of either version count in the same windows during a rollout.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from functools import lru_cache
from importlib.resources import files

from limits import RateLimitItem, RateLimitItemPerMinute
from limits.storage import MemoryStorage
from limits.strategies import MovingWindowRateLimiter
from redis.asyncio import Redis

from gateway.auth.principal import Principal
from gateway.core.config import Settings
from gateway.core.errors import RateLimitedError
from gateway.core.redis_script import LeanScript
from gateway.core.timebox import time_box
from gateway.limits.breaker import REDIS_ERRORS, RedisBreaker
from gateway.limits.policy import (
    REQUESTS_PER_MINUTE,
    REQUESTS_PER_MINUTE_PER_USER,
    request_limits,
)
from observability.metrics import RATE_LIMIT_REJECTIONS, tenant_label

SCRIPT = files("gateway.limits").joinpath("scripts/request_window.lua").read_text()
WINDOW_S = 60


def tenant_key(principal: Principal) -> str:
    return f"t:{principal.tenant_id}"


def user_key(principal: Principal) -> str:
    return f"u:{principal.tenant_id}:{principal.user}"


class PerMinute(RateLimitItemPerMinute):
    """`amount` requests per minute, windowed under a key that does not name the amount.

    `limits` puts the amount in the key, so a PATCH of `requests_per_minute` from 100 to 50
    would open a new, empty window and admit 50 more at once. Keyed by the identity alone,
    the moving window carries over: the new amount applies to the requests already counted.
    """

    def key_for(self, *identifiers: bytes | str | int | float) -> str:
        return "/".join((self.namespace, *map(str, identifiers), self.GRANULARITY.name))


@lru_cache(maxsize=1024)
def per_minute(amount: int) -> RateLimitItem:
    """The (shared, immutable) limit item of `amount` requests per minute."""
    return PerMinute(amount)


@dataclass(frozen=True, slots=True)
class WindowState:
    """One limit after a check: for the headers and `GET /v1/limits`."""

    code: str
    limit: int
    remaining: int
    reset_s: float


class RedisWindow:
    """The moving windows in Redis: one `request_window.lua` call per limit check."""

    def __init__(self, redis: Redis, prefix: str) -> None:
        self.prefix = f"{prefix}rl:"
        self._acquire = LeanScript(redis, SCRIPT)

    async def hit(self, item: RateLimitItem, ident: str) -> tuple[bool, int, float]:
        """(admitted, requests now in the window, timestamp of the oldest one)."""
        now = time.time()
        key = self.prefix + item.key_for(ident)
        acquired, count, oldest = await self._acquire([key], [now, item.amount, WINDOW_S, 1])
        return bool(acquired), int(count), float(oldest)


class RequestLimiter:
    """Checks the request limits of a principal (Redis when configured, else memory)."""

    def __init__(self, settings: Settings, breaker: RedisBreaker, redis: Redis | None) -> None:
        """`redis`: a client without socket timeouts of its own (every call here is
        time-boxed with `time_box`), the one the quota service uses."""
        self.breaker = breaker
        self.timeout_s = settings.redis_timeout_ms / 1000
        self.memory = MovingWindowRateLimiter(MemoryStorage())
        self.redis = None if redis is None else RedisWindow(redis, settings.redis_key_prefix)
        self.ceiling = settings.limits_requests_per_minute_ceiling
        """The request limit of a tenant without one (`GATEWAY_LIMITS_REQUESTS_PER_MINUTE_CEILING`
        in the settings)."""

    async def check(self, principal: Principal) -> list[WindowState]:
        """Count this request against the tenant's (and end user's) limit; 429 when over.

        Raises:
            RequestLimitExceeded: a limit is exhausted (its 429: `code` names it, Retry-After).
            ServiceUnavailableError: Redis is down and the failure mode is closed.
        """
        per_tenant, per_user = request_limits(principal.limits)
        states: list[WindowState] = []
        await self._hit(
            principal,
            REQUESTS_PER_MINUTE,
            self.ceiling if per_tenant is None else per_tenant,
            tenant_key(principal),
            states,
        )
        if per_user is not None and principal.user is not None:
            await self._hit(
                principal, REQUESTS_PER_MINUTE_PER_USER, per_user, user_key(principal), states
            )
        return states

    async def _hit(
        self, principal: Principal, code: str, amount: int, ident: str, states: list[WindowState]
    ) -> None:
        item = per_minute(amount)
        admitted, count, oldest = await self._window(item, ident)
        reset_s = max(0.0, oldest + WINDOW_S - time.time())
        states.append(WindowState(code, amount, max(0, amount - count), reset_s))
        if not admitted:
            RATE_LIMIT_REJECTIONS.labels(tenant_label(principal.tenant_slug), code).inc()
            error = RateLimitedError(
                f"Rate limit reached: {amount} requests per minute ({code}).",
                code=code,
                retry_after_s=max(1.0, math.ceil(reset_s)),
            )
            raise RequestLimitExceeded(error, states)

    async def _window(self, item: RateLimitItem, ident: str) -> tuple[bool, int, float]:
        if self.redis is not None and self.breaker.usable():
            try:
                async with time_box(self.timeout_s):
                    result = await self.redis.hit(item, ident)
            except REDIS_ERRORS as exc:
                self.breaker.failed(exc)
            else:
                self.breaker.succeeded()
                return result
        if self.redis is not None:
            self.breaker.fallback()  # 503 in closed mode
        return self._memory_hit(item, ident)

    def _memory_hit(self, item: RateLimitItem, ident: str) -> tuple[bool, int, float]:
        admitted = self.memory.hit(item, ident)
        stats = self.memory.get_window_stats(item, ident)
        return admitted, item.amount - stats.remaining, stats.reset_time - WINDOW_S


class RequestLimitExceeded(Exception):
    """Carries the 429 and the window state (for the headers) out of `RequestLimiter._hit`."""

    def __init__(self, error: RateLimitedError, states: list[WindowState]) -> None:
        super().__init__(error.message)
        self.error = error
        self.states = states
