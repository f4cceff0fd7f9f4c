"""Bodies of `GET /admin/audit`."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from fastapi import Depends, Query
from pydantic import AwareDatetime, BaseModel

from gateway.core.clock import rfc3339
from gateway.core.errors import ValidationFailedError
from tenants.models import AuditEvent

_LABEL = r"^[A-Za-z0-9_.:@-]{1,128}$"


class AuditQuery(BaseModel):
    """The filters of the audit list (all optional, combined with AND)."""

    actor: str | None = None
    action: str | None = None
    tenant_id: str | None = None
    since: AwareDatetime | None = None


async def audit_query(
    actor: Annotated[str | None, Query(pattern=_LABEL, description="e.g. `user:alice`.")] = None,
    action: Annotated[str | None, Query(pattern=_LABEL, description="e.g. `key.revoke`.")] = None,
    tenant_id: Annotated[str | None, Query(pattern=r"^[A-Za-z0-9_]{1,64}$")] = None,
    since: Annotated[
        str | None,
        Query(
            description="RFC 3339 date-time with an offset, inclusive.",
            json_schema_extra={"format": "date-time"},
        ),
    ] = None,
) -> AuditQuery:
    """Dependency reading the filters from the query string."""
    return AuditQuery(
        actor=actor,
        action=action,
        tenant_id=tenant_id,
        since=None if since is None else _rfc3339_utc(since),
    )


def _rfc3339_utc(value: str) -> datetime:
    """An RFC 3339 date-time with its offset, in UTC (a bare number is not one, nor a time
    whose UTC equivalent leaves years 1-9999: 422)."""
    try:
        parsed = datetime.fromisoformat(value.replace("z", "Z").replace("Z", "+00:00"))
        if parsed.tzinfo is None or "T" not in value.upper():
            raise ValueError(value)
        return parsed.astimezone(UTC)
    except (ValueError, OverflowError):
        raise ValidationFailedError(
            "since: not an RFC 3339 date-time with an offset (in years 1-9999 in UTC).",
            param="since",
            code="invalid_value",
        ) from None


AuditQueryDep = Annotated[AuditQuery, Depends(audit_query)]


class AuditEventPublic(BaseModel):
    """One audit event as listed."""

    id: str
    object: Literal["audit_event"] = "audit_event"
    actor: str
    action: str
    target_type: str
    target_id: str | None
    tenant_id: str | None
    request_id: str | None
    details: dict[str, Any] | None
    created_at: str


def event_public(event: AuditEvent) -> AuditEventPublic:
    """Render an event row."""
    return AuditEventPublic(
        id=event.id,
        actor=event.actor,
        action=event.action,
        target_type=event.target_type,
        target_id=event.target_id,
        tenant_id=event.tenant_id,
        request_id=event.request_id,
        details=event.details,
        created_at=rfc3339(event.created_at) or "",
    )
