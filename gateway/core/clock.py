"""Time helpers: everything is UTC; timestamps are rendered as RFC 3339 strings."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Annotated, Any

from pydantic import AfterValidator, AwareDatetime, BeforeValidator


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


RFC3339 = re.compile(r"\d{4}-\d{2}-\d{2}[Tt]\d{2}:\d{2}:\d{2}(\.\d{1,9})?([Zz]|[+-]\d{2}:\d{2})")
RFC3339_RULE = "must be an RFC 3339 date-time with an offset, such as 2030-01-31T12:00:00Z"


def _rfc3339_text(value: Any) -> Any:
    # pydantic alone also takes a Unix time (a number, or digits in a string) and a space for
    # the `T`: a client's mistake would become some other instant instead of a 422.
    if isinstance(value, datetime):  # built in Python, not sent
        return value
    if not isinstance(value, str) or not RFC3339.fullmatch(value):
        raise ValueError(RFC3339_RULE)
    return value


UtcDatetime = Annotated[AwareDatetime, BeforeValidator(_rfc3339_text), AfterValidator(_in_utc)]
"""An RFC 3339 time with an offset in a request (nothing else: no Unix time, no space for the
`T`), converted to UTC (a time whose UTC equivalent leaves years 1-9999 is a 422, not an
overflow later)."""
