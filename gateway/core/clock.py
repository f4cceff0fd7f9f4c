"""Time helpers: everything is UTC; timestamps are rendered as RFC 3339 strings."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated

from pydantic import AfterValidator, AwareDatetime


def utcnow() -> datetime:
    """Now, timezone-aware UTC."""
    return datetime.now(UTC)


def as_utc(value: datetime) -> datetime:
    """Treat a naive datetime (as SQLite returns them) as UTC."""
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def rfc3339(value: datetime | None) -> str | None:
    """`2026-11-26T07:05:50.123Z` style string, or None."""
    if value is None:
        return None
    return as_utc(value).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _in_utc(value: datetime) -> datetime:
    try:
        return value.astimezone(UTC)
    except OverflowError:  # 0001-01-01T00:00+01:00, 9999-12-31T23:59-01:00
        raise ValueError("the time in UTC falls outside years 1 to 9999") from None


UtcDatetime = Annotated[AwareDatetime, AfterValidator(_in_utc)]
"""An RFC 3339 time with an offset in a request, converted to UTC (a time whose UTC
equivalent leaves years 1-9999 is a 422, not an overflow later)."""
