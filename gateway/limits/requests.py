"""Request limits per tenant and per end user, with slowapi's moving window.

The limit values come from the tenant's `limits` on the principal (cached ≤ 5 s, so a PATCH
takes effect within seconds on every replica). Keys: `t:<tenant id>` and `u:<tenant id>:<sub>`.
The storage is Redis (`gateway+redis://`, see window.py: one round trip per limit) when
`GATEWAY_REDIS_URL` is set, memory otherwise. slowapi's storage is synchronous: each call is
bounded by the socket timeout (`GATEWAY_REDIS_TIMEOUT_MS`) and runs on the event loop; the
benchmark measures its cost.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from limits import RateLimitItem, RateLimitItemPerMinute
from limits.storage import MemoryStorage
from limits.strategies import MovingWindowRateLimiter, RateLimiter
from redis.backoff import NoBackoff
from redis.retry import Retry
from slowapi import Limiter
from starlette.requests import Request

from gateway.auth.principal import Principal
from gateway.core.config import Settings
from gateway.core.errors import RateLimitedError
from gateway.limits import window
from gateway.limits.breaker import REDIS_ERRORS, RedisBreaker
from gateway.limits.policy import (
    REQUESTS_PER_MINUTE,
    REQUESTS_PER_MINUTE_PER_USER,
    request_limits,
)
from observability.metrics import RATE_LIMIT_REJECTIONS, tenant_label


def limit_key(request: Request) -> str:
    """slowapi key function: the end user when known (JWT `sub`), else the tenant."""
    principal: Principal = request.state.principal
    if principal.user is not None:
        return user_key(principal)
    return tenant_key(principal)


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


class RequestLimiter:
    """Checks the request limits of a principal (Redis via slowapi, or memory)."""

    def __init__(self, settings: Settings, breaker: RedisBreaker) -> None:
        self.breaker = breaker
        self.fallback: RateLimiter = MovingWindowRateLimiter(MemoryStorage())
        self.slowapi: Limiter | None = None
        if settings.redis_url:
            timeout = settings.redis_timeout_ms / 1000
            options: dict[str, Any] = {
                "key_prefix": f"{settings.redis_key_prefix}rl",
                "socket_timeout": timeout,
                "socket_connect_timeout": timeout,
                "retry": Retry(NoBackoff(), 0),  # one attempt: the breaker decides what next
                "health_check_interval": 0,
            }
            self.slowapi = Limiter(
                key_func=limit_key,
                strategy="moving-window",
                storage_uri=window.SCHEME + settings.redis_url,
                storage_options=options,
                headers_enabled=False,
                in_memory_fallback_enabled=False,
                swallow_errors=False,
            )
        self.shared: RateLimiter = self.slowapi.limiter if self.slowapi else self.fallback

    def check(self, principal: Principal) -> list[WindowState]:
        """Count this request against the tenant's (and end user's) limit; 429 when over.

        Raises:
            RateLimitedError: a limit is exhausted (`code` names it, Retry-After set).
            ServiceUnavailableError: Redis is down and the failure mode is closed.
        """
        per_tenant, per_user = request_limits(principal.limits)
        states: list[WindowState] = []
        if per_tenant is not None:
            self._hit(principal, REQUESTS_PER_MINUTE, per_tenant, tenant_key(principal), states)
        if per_user is not None and principal.user is not None:
            self._hit(
                principal, REQUESTS_PER_MINUTE_PER_USER, per_user, user_key(principal), states
            )
        return states

    def _hit(
        self, principal: Principal, code: str, amount: int, ident: str, states: list[WindowState]
    ) -> None:
        item = per_minute(amount)
        strategy = self._strategy()
        try:
            admitted = strategy.hit(item, ident)
            stats = strategy.get_window_stats(item, ident)
            if strategy is self.shared and self.slowapi is not None:
                self.breaker.succeeded()
        except REDIS_ERRORS as exc:
            self.breaker.failed(exc)
            self.breaker.fallback()
            strategy = self.fallback
            admitted = strategy.hit(item, ident)
            stats = strategy.get_window_stats(item, ident)
        reset_s = max(0.0, stats.reset_time - time.time())
        states.append(WindowState(code, amount, stats.remaining, reset_s))
        if not admitted:
            RATE_LIMIT_REJECTIONS.labels(tenant_label(principal.tenant_slug), code).inc()
            error = RateLimitedError(
                f"Rate limit reached: {amount} requests per minute ({code}).",
                code=code,
                retry_after_s=max(1.0, math.ceil(reset_s)),
            )
            raise RequestLimitExceeded(error, states)

    def _strategy(self) -> RateLimiter:
        if self.slowapi is None:
            return self.fallback
        if self.breaker.usable():
            return self.shared
        self.breaker.fallback()
        return self.fallback


class RequestLimitExceeded(Exception):
    """Carries the 429 and the window state (for the headers) out of `RequestLimiter._hit`."""

    def __init__(self, error: RateLimitedError, states: list[WindowState]) -> None:
        super().__init__(error.message)
        self.error = error
        self.states = states
