"""`GET /admin/audit`: who changed what, when."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from gateway.core.db import SessionDep
from tenants.audit.repository import AuditRepository
from tenants.audit.schemas import AuditEventPublic, AuditQueryDep, event_public
from tenants.pagination import ListBody, PageDep

router = APIRouter()


@router.get("/audit", response_model=ListBody[AuditEventPublic])
async def list_audit_events(
    query: AuditQueryDep, page: PageDep, session: SessionDep
) -> dict[str, Any]:
    """Audit events, oldest first; filter by `actor`, `action`, `tenant_id`, `since`."""
    result = await AuditRepository(session).list_page(
        page, actor=query.actor, action=query.action, tenant_id=query.tenant_id, since=query.since
    )
    return result.render(event_public)
