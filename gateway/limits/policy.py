"""A tenant's limits as the data plane reads them, and the 429 codes that name them."""

from __future__ import annotations

import calendar
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from typing import Any

REQUESTS_PER_MINUTE = "requests_per_minute"
REQUESTS_PER_MINUTE_PER_USER = "requests_per_minute_per_user"
TOKENS_PER_MINUTE = "tokens_per_minute"
TOKENS_PER_DAY = "tokens_per_day"
CONCURRENT_RUNS = "concurrent_runs"
SPEND_PER_DAY = "spend_per_day"
SPEND_PER_MONTH = "spend_per_month"


def _limit(stored: dict[str, Any], name: str) -> int | None:
    value = stored.get(name)
    return value if isinstance(value, int) and value > 0 else None


def _micro_usd(stored: dict[str, Any], name: str) -> int | None:
    """A spend limit (a decimal string, stored by the control plane) in micro-dollars."""
    value = stored.get(name)
    if value is None or isinstance(value, bool):
        return None
    try:
        micro = int(Decimal(str(value)).scaleb(6))
    except (InvalidOperation, ValueError):
        return None
    return micro if micro > 0 else None


@dataclass(frozen=True, slots=True)
class QuotaLimits:
    """Token quotas and the concurrency cap of a tenant (None: unlimited)."""

    tokens_per_minute: int | None = None
    tokens_per_day: int | None = None
    max_concurrent_runs: int | None = None
    spend_per_day: int | None = None
    """Micro-dollars per UTC day."""
    spend_per_month: int | None = None
    """Micro-dollars per calendar month (UTC)."""

    @classmethod
    def of(cls, stored: dict[str, Any] | None) -> QuotaLimits:
        """Read the `limits` document stored on the tenant (the principal carries it)."""
        if not stored:
            return _UNLIMITED
        return cls(
            tokens_per_minute=_limit(stored, "tokens_per_minute"),
            tokens_per_day=_limit(stored, "tokens_per_day"),
            max_concurrent_runs=_limit(stored, "max_concurrent_runs"),
            spend_per_day=_micro_usd(stored, "spend_per_day_usd"),
            spend_per_month=_micro_usd(stored, "spend_per_month_usd"),
        )

    @property
    def spend_metered(self) -> bool:
        """True when model calls must reserve their estimated cost."""
        return self.spend_per_day is not None or self.spend_per_month is not None

    @property
    def metered(self) -> bool:
        """True when model calls must reserve (tokens, and their cost where spend is capped)."""
        return (
            self.tokens_per_minute is not None
            or self.tokens_per_day is not None
            or self.spend_metered
        )

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


def month_of_day(day: int) -> int:
    """The calendar month (year * 12 + month - 1) of a UTC day number (epoch seconds // 86400)."""
    moment = datetime.fromtimestamp(day * 86_400, UTC)
    return moment.year * 12 + moment.month - 1


def seconds_to_month_end(now: float | None = None) -> float:
    """Seconds until the next calendar month (UTC), when `spend_per_month` resets."""
    moment = datetime.fromtimestamp(time.time() if now is None else now, UTC)
    days = calendar.monthrange(moment.year, moment.month)[1]
    start = moment.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    return max(1.0, start.timestamp() + days * 86_400 - moment.timestamp())


def seconds_to_midnight() -> float:
    """Seconds until the next UTC day (when `tokens_per_day` resets)."""
    return float(86_400 - int(time.time()) % 86_400)
