"""The query of a usage report: `group_by`, `start`, `end` (inclusive UTC days).

Two dependency variants: `TenantUsageQuery` (a tenant's own report, `/v1/usage` and
`/admin/tenants/{id}/usage`; default `group_by=day`) and `AdminUsageQuery` (all tenants,
`/admin/usage`; also `group_by=tenant`, the default).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, timedelta
from typing import Annotated, Literal

from fastapi import Depends, Query

from gateway.core.clock import utcnow
from gateway.core.errors import ValidationFailedError

TenantGroupBy = Literal["day", "agent", "model", "key", "user"]
AdminGroupBy = Literal["day", "agent", "model", "key", "user", "tenant"]
DEFAULT_DAYS = 30
MAX_DAYS = 366

_DATE = r"^\d{4}-\d{2}-\d{2}$"
# A calendar day (`format: date`: 0000-00-00 or 2026-02-30 match the pattern but are no day).
_DAY = {"format": "date"}
_RANGE = " `start` must not be after `end`, and the range covers at most 366 days."
_START = Query(
    pattern=_DATE,
    json_schema_extra=_DAY,
    description="First UTC day, YYYY-MM-DD (default: 29 days before `end`)." + _RANGE,
)
_END = Query(
    pattern=_DATE,
    json_schema_extra=_DAY,
    description="Last UTC day, YYYY-MM-DD, inclusive (default: today)." + _RANGE,
)


@dataclass(frozen=True, slots=True)
class UsageQuery:
    """A validated report query."""

    group_by: str
    """One of `day`, `agent`, `model`, `key`, `user` (and `tenant` for the admin report)."""

    start: date
    """First UTC day of the range, inclusive."""

    end: date
    """Last UTC day of the range, inclusive."""


def _parse_day(value: str, param: str) -> date:
    try:
        return date.fromisoformat(value)
    except ValueError:
        raise ValidationFailedError(
            f"{param}: not a date (YYYY-MM-DD).", param=param, code="invalid_value"
        ) from None


def build_usage_query(group_by: str, start: str | None, end: str | None) -> UsageQuery:
    """Validate the date range; defaults cover the last 30 days ending today (UTC)."""
    end_day = _parse_day(end, "end") if end else utcnow().date()
    if start:
        start_day = _parse_day(start, "start")
    else:  # the 30 days ending at `end`, or fewer when `end` lies in the first 30 days of year 1
        start_day = end_day - min(timedelta(days=DEFAULT_DAYS - 1), end_day - date.min)
    if start_day > end_day:
        raise ValidationFailedError(
            "start: must not be after end.", param="start", code="invalid_value"
        )
    if (end_day - start_day).days + 1 > MAX_DAYS:
        raise ValidationFailedError(
            f"The range covers more than {MAX_DAYS} days.", param="start", code="invalid_value"
        )
    return UsageQuery(group_by=group_by, start=start_day, end=end_day)


async def tenant_usage_query(
    group_by: Annotated[TenantGroupBy, Query(description="How rows are grouped.")] = "day",
    start: Annotated[str | None, _START] = None,
    end: Annotated[str | None, _END] = None,
) -> UsageQuery:
    """Dependency: the query of one tenant's report (`group_by=tenant` is not offered)."""
    return build_usage_query(group_by, start, end)


async def admin_usage_query(
    group_by: Annotated[AdminGroupBy, Query(description="How rows are grouped.")] = "tenant",
    start: Annotated[str | None, _START] = None,
    end: Annotated[str | None, _END] = None,
) -> UsageQuery:
    """Dependency: the query of the all-tenants report."""
    return build_usage_query(group_by, start, end)


TenantUsageQuery = Annotated[UsageQuery, Depends(tenant_usage_query)]
AdminUsageQuery = Annotated[UsageQuery, Depends(admin_usage_query)]


@dataclass(frozen=True, slots=True)
class ExportQuery:
    """A validated export query: the day range and the resume cursor."""

    start: date
    """First UTC day of the range, inclusive."""

    end: date
    """Last UTC day of the range, inclusive."""

    after: str | None
    """Resume cursor: only runs whose id sorts after this one."""

    after_segment: int | None = None
    """With `after`: the run's segments after this one come first (`after=<run_id>:<n>`)."""


async def export_query(
    start: Annotated[str | None, _START] = None,
    end: Annotated[str | None, _END] = None,
    after: Annotated[
        str | None,
        Query(
            max_length=50,
            pattern=r"^run_[0-9A-Za-z]{1,36}(:[0-9]{1,9})?$",
            description="Cursor: `<run_id>:<segment>` of the last record already received "
            "(the run's later segments follow), or `<run_id>` alone (every segment of that "
            "run was received).",
        ),
    ] = None,
) -> ExportQuery:
    """Dependency: the query of a billing export (same day range rules as the reports)."""
    query = build_usage_query("day", start, end)
    if after is not None and ":" in after:
        run_id, segment = after.split(":", 1)
        return ExportQuery(query.start, query.end, after=run_id, after_segment=int(segment))
    return ExportQuery(start=query.start, end=query.end, after=after)


UsageExportQuery = Annotated[ExportQuery, Depends(export_query)]
