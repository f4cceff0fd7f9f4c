"""`GET /admin/audit`: who changed what, when."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from gateway.core.db import SessionDep
from gateway.core.json_body import JsonBodyRoute
from tenants.audit.repository import AuditRepository
from tenants.audit.schemas import AuditEventPublic, AuditQueryDep, event_public
from tenants.pagination import ListBody, PageDep

router = APIRouter(route_class=JsonBodyRoute)


@router.get("/audit", response_model=ListBody[AuditEventPublic])
async def list_audit_events(
    query: AuditQueryDep, page: PageDep, session: SessionDep
) -> dict[str, Any]:
    """Audit events, newest first; filter by `actor`, `action`, `tenant_id`, `since`.

    Pass the last event's `id` as `after` for the next (older) page: pages neither repeat nor
    skip events while new ones are written.
    """
    result = await AuditRepository(session).list_page(
        page, actor=query.actor, action=query.action, tenant_id=query.tenant_id, since=query.since
    )
    return result.render(event_public)
