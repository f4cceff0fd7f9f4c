"""Write audit events. Callers pass only non-secret facts: ids, names, field names, modes."""

from __future__ import annotations

from typing import Any

from sqlmodel.ext.asyncio.session import AsyncSession

from gateway.core.clock import utcnow
from gateway.core.ids import new_id
from tenants.audit.repository import AuditRepository
from tenants.models import AuditEvent


async def record_event(
    session: AsyncSession,
    *,
    actor: str,
    action: str,
    target_type: str,
    target_id: str | None,
    tenant_id: str | None = None,
    request_id: str | None = None,
    details: dict[str, Any] | None = None,
) -> AuditEvent:
    """Append one event to the unit of work that holds the change it records: the unit commits
    both or neither (flushed here, so an event the database refuses fails the change at once).

    Args:
        session: The unit of work, holding the change (flushed by the service, not committed).
        actor: Who acted: `admin-token`, `user:<name>` or `cli`.
        action: `<target>.<verb>`, e.g. `key.revoke`.
        target_type: `tenant`, `api_key`, `agent`, `jwt_config` or `admin_user`.
        target_id: The id (or agent name) of the target.
        tenant_id: The tenant the target belongs to, if any.
        request_id: The `X-Request-ID` of the HTTP request, if any.
        details: Non-secret facts about the change.
    """
    event = AuditEvent(
        id=new_id("aud"),
        actor=actor,
        action=action,
        target_type=target_type,
        target_id=target_id,
        tenant_id=tenant_id,
        request_id=request_id,
        details=details,
        created_at=utcnow(),
    )
    AuditRepository(session).add(event)
    await session.flush()
    return event
