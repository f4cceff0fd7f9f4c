"""Redis health as the limit checks see it, and what they do while Redis is away.

After a failed or slow Redis call the limit checks skip Redis for `retry_s` (≤ 5 s) and then
try again, so a dead Redis costs at most one time-boxed call per `retry_s` and enforcement in
Redis resumes within `retry_s` of it coming back. Meanwhile `open` mode uses the replica's
memory (logged once per outage, counted per check in `gateway_limits_degraded_total`) and
`closed` mode answers 503 with Retry-After.
"""

from __future__ import annotations

import logging
import math
import time

import redis
from limits.errors import StorageError

from gateway.core.errors import ServiceUnavailableError
from observability.metrics import LIMITS_DEGRADED

logger = logging.getLogger("gateway.limits")

REDIS_ERRORS: tuple[type[BaseException], ...] = (
    redis.RedisError,
    StorageError,
    OSError,
    TimeoutError,
)
"""What a Redis call may raise when Redis is down, slow or unreachable."""


class RedisBreaker:
    """Shared by the request limiter and the quota store of one process."""

    def __init__(self, *, retry_s: float, fail_open: bool) -> None:
        self.retry_s = retry_s
        self.fail_open = fail_open
        self._down_until = 0.0
        self._down = False

    def usable(self) -> bool:
        """True when the next check should go to Redis."""
        return not self._down or time.monotonic() >= self._down_until

    @property
    def degraded(self) -> bool:
        """True while Redis is considered unavailable."""
        return self._down

    def failed(self, exc: BaseException) -> None:
        """A Redis call failed: stop trying it for `retry_s`."""
        if not self._down:
            mode = "per-replica memory" if self.fail_open else "503 (fail closed)"
            logger.warning(
                "limits: Redis unavailable (%s); falling back to %s", type(exc).__name__, mode
            )
        self._down = True
        self._down_until = time.monotonic() + self.retry_s

    def succeeded(self) -> None:
        """A Redis call worked."""
        if self._down:
            self._down = False
            logger.warning("limits: Redis is back; enforcing limits in Redis again")

    def fallback(self) -> None:
        """Use memory for this check (open) or refuse it with 503 (closed)."""
        if not self.fail_open:
            raise ServiceUnavailableError(
                "Rate limits cannot be checked right now; retry shortly.",
                code="limits_unavailable",
                headers={"Retry-After": str(max(1, math.ceil(self.retry_s)))},
            )
        LIMITS_DEGRADED.inc()
