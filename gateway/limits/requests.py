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
from gateway.core.errors import GatewayError, RateLimitedError
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


Window = tuple[int, float]
"""A window after a check: (requests now in it, timestamp of the entry whose leaving frees a
slot: the oldest one, or with more entries than a lowered limit allows, the one at the limit)."""


class RedisWindow:
    """The moving windows in Redis: one `request_window.lua` call per request."""

    def __init__(self, redis: Redis, prefix: str) -> None:
        self.prefix = f"{prefix}rl:"
        self._acquire = LeanScript(redis, SCRIPT)

    async def hit(
        self, limits: list[tuple[RateLimitItem, str]], amount: int = 1
    ) -> tuple[int | None, list[Window]]:
        """Count one request in every window of `limits` ((item, identity) pairs), or in none:
        (the index of the first window that refused, None when admitted; each window).
        `amount=0` only reads the windows."""
        now = time.time()
        keys = [self.prefix + item.key_for(ident) for item, ident in limits]
        limit_args = (item.amount for item, _ in limits)
        reply = await self._acquire(keys, [now, WINDOW_S, amount, *limit_args])
        refused = int(reply[0])
        windows = [(int(reply[i]), float(reply[i + 1])) for i in range(1, len(reply), 2)]
        return (refused - 1 if refused else None), windows


class RequestLimiter:
    """Checks the request limits of a principal (Redis when configured, else memory)."""

    def __init__(self, settings: Settings, breaker: RedisBreaker, redis: Redis | None) -> None:
        """`redis`: a client without socket timeouts of its own (every call here is
        time-boxed with `time_box`), the one the quota service uses."""
        self.breaker = breaker
        self.timeout_s = settings.redis_timeout_ms / 1000
        self.storage = MemoryStorage()
        self.memory = MovingWindowRateLimiter(self.storage)
        self.redis = None if redis is None else RedisWindow(redis, settings.redis_key_prefix)
        self.ceiling = settings.limits_requests_per_minute_ceiling
        """The request limit of a tenant without one (`GATEWAY_LIMITS_REQUESTS_PER_MINUTE_CEILING`
        in the settings)."""

    async def peek(self, principal: Principal) -> list[WindowState]:
        """The principal's request windows now, counting nothing (for the headers of a `/v1`
        response answered before its request was counted: an unknown path, a 405, a 413, a
        suspended tenant). Empty when the limits store cannot answer."""
        limits, codes = self._limits(principal)
        try:
            _, windows = await self._windows(limits, amount=0)
        except GatewayError:  # fail-closed mode with Redis down: the response stands
            return []
        return self._states(codes, limits, windows)

    def _limits(self, principal: Principal) -> tuple[list[tuple[RateLimitItem, str]], list[str]]:
        """The windows a request of `principal` counts in, and their 429 codes."""
        per_tenant, per_user = request_limits(principal.limits)
        tenant_amount = self.ceiling if per_tenant is None else per_tenant
        codes = [REQUESTS_PER_MINUTE]
        limits = [(per_minute(tenant_amount), tenant_key(principal))]
        if per_user is not None and principal.user is not None:
            codes.append(REQUESTS_PER_MINUTE_PER_USER)
            limits.append((per_minute(per_user), user_key(principal)))
        return limits, codes

    @staticmethod
    def _states(
        codes: list[str], limits: list[tuple[RateLimitItem, str]], windows: list[Window]
    ) -> list[WindowState]:
        now = time.time()
        return [
            WindowState(
                code, item.amount, max(0, item.amount - count), max(0.0, oldest + WINDOW_S - now)
            )
            for code, (item, _), (count, oldest) in zip(codes, limits, windows, strict=True)
        ]

    async def check(self, principal: Principal) -> list[WindowState]:
        """Count this request against the tenant's (and end user's) limit; 429 when over.

        The request is counted in both windows or in neither: one refused by the end user's
        limit does not use up the tenant's, so one user cannot lock out the others.

        Raises:
            RequestLimitExceeded: a limit is exhausted (its 429: `code` names it, Retry-After).
            ServiceUnavailableError: Redis is down and the failure mode is closed.
        """
        limits, codes = self._limits(principal)
        refused, windows = await self._windows(limits)
        states = self._states(codes, limits, windows)
        if refused is not None:
            state = states[refused]
            RATE_LIMIT_REJECTIONS.labels(tenant_label(principal.tenant_slug), state.code).inc()
            # When both windows are full, a retry succeeds only once both have room.
            wait = max(s.reset_s for s in states if s is state or s.remaining <= 0)
            error = RateLimitedError(
                f"Rate limit reached: {state.limit} requests per minute ({state.code}).",
                code=state.code,
                retry_after_s=max(1.0, math.ceil(wait)),
            )
            # The refusing window first: its trio is the one the 429's headers show.
            raise RequestLimitExceeded(error, [state, *(s for s in states if s is not state)])
        return states

    async def _windows(
        self, limits: list[tuple[RateLimitItem, str]], amount: int = 1
    ) -> tuple[int | None, list[Window]]:
        if self.redis is not None and self.breaker.usable():
            try:
                async with time_box(self.timeout_s):
                    result = await self.redis.hit(limits, amount)
            except REDIS_ERRORS as exc:
                self.breaker.failed(exc)
            else:
                self.breaker.succeeded()
                return result
        if self.redis is not None:
            self.breaker.fallback()  # 503 in closed mode
        return self._memory_hit(limits, amount)

    def _memory_hit(
        self, limits: list[tuple[RateLimitItem, str]], amount: int = 1
    ) -> tuple[int | None, list[Window]]:
        """As the script, in process: no await between the tests and the hits."""
        refused = next(
            (i for i, (item, ident) in enumerate(limits) if not self.memory.test(item, ident)),
            None,
        )
        if refused is None and amount:
            for item, ident in limits:
                self.memory.hit(item, ident)
        windows: list[Window] = []
        for item, ident in limits:
            stats = self.memory.get_window_stats(item, ident)
            count, oldest = item.amount - stats.remaining, stats.reset_time - WINDOW_S
            if count > item.amount:
                # More entries than a lowered limit allows: a slot frees when the one at the
                # limit leaves (the storage's entries are newest first), as in the script.
                entries = self.storage.events.get(item.key_for(ident)) or []
                if len(entries) >= item.amount:
                    oldest = entries[item.amount - 1].atime
            windows.append((count, oldest))
        return refused, windows


class RequestLimitExceeded(Exception):
    """Carries the 429 and the window state (for the headers) out of `RequestLimiter._hit`."""

    def __init__(self, error: RateLimitedError, states: list[WindowState]) -> None:
        super().__init__(error.message)
        self.error = error
        self.states = states
