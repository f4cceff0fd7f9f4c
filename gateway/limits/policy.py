"""A tenant's limits as the data plane reads them, and the 429 codes that name them."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

REQUESTS_PER_MINUTE = "requests_per_minute"
REQUESTS_PER_MINUTE_PER_USER = "requests_per_minute_per_user"
TOKENS_PER_MINUTE = "tokens_per_minute"
TOKENS_PER_DAY = "tokens_per_day"
CONCURRENT_RUNS = "concurrent_runs"


def _limit(stored: dict[str, Any], name: str) -> int | None:
    value = stored.get(name)
    return value if isinstance(value, int) and value > 0 else None


@dataclass(frozen=True, slots=True)
class QuotaLimits:
    """Token quotas and the concurrency cap of a tenant (None: unlimited)."""

    tokens_per_minute: int | None = None
    tokens_per_day: int | None = None
    max_concurrent_runs: int | None = None

    @classmethod
    def of(cls, stored: dict[str, Any] | None) -> QuotaLimits:
        """Read the `limits` document stored on the tenant (the principal carries it)."""
        if not stored:
            return _UNLIMITED
        return cls(
            tokens_per_minute=_limit(stored, "tokens_per_minute"),
            tokens_per_day=_limit(stored, "tokens_per_day"),
            max_concurrent_runs=_limit(stored, "max_concurrent_runs"),
        )

    @property
    def metered(self) -> bool:
        """True when model calls must reserve tokens."""
        return self.tokens_per_minute is not None or self.tokens_per_day is not None

    @property
    def any(self) -> bool:
        """True when a run needs the quota store at all."""
        return self.metered or self.max_concurrent_runs is not None


_UNLIMITED = QuotaLimits()


def request_limits(stored: dict[str, Any] | None) -> tuple[int | None, int | None]:
    """(requests_per_minute, requests_per_minute_per_user) of a tenant."""
    if not stored:
        return None, None
    return _limit(stored, REQUESTS_PER_MINUTE), _limit(stored, REQUESTS_PER_MINUTE_PER_USER)


def seconds_to_midnight() -> float:
    """Seconds until the next UTC day (when `tokens_per_day` resets)."""
    return float(86_400 - int(time.time()) % 86_400)
