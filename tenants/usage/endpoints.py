"""Admin usage reports: one tenant's (`/admin/tenants/{id}/usage`) and all tenants'.

Under `/admin/tenants/{id}` a deleted tenant is 404, as for everything else under it; its usage
stays readable by id from `/admin/usage?tenant_id=` and `/admin/usage/records?tenant_id=`.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Header, Query
from fastapi.responses import StreamingResponse

from gateway.core.db import DatabaseDep, SessionDep
from gateway.core.json_body import JsonBodyRoute
from tenants.scoping import require_tenant
from tenants.usage.export import export_response
from tenants.usage.repository import UsageRepository
from tenants.usage.schemas import AdminUsageQuery, TenantUsageQuery, UsageExportQuery

router = APIRouter(route_class=JsonBodyRoute)


@router.get("/tenants/{tenant_id}/usage")
async def tenant_usage(
    tenant_id: str, query: TenantUsageQuery, session: SessionDep
) -> dict[str, Any]:
    """One live tenant's usage report (a deleted tenant's: `/admin/usage?tenant_id=`)."""
    tenant = await require_tenant(session, tenant_id)
    return await UsageRepository(session).report(
        tenant_id=tenant.id, group_by=query.group_by, start=query.start, end=query.end
    )


_TENANT_FILTER = Query(description="Only this tenant's (404 if unknown; deleted tenants stay).")


@router.get("/usage")
async def all_usage(
    query: AdminUsageQuery,
    session: SessionDep,
    tenant_id: Annotated[str | None, _TENANT_FILTER] = None,
) -> dict[str, Any]:
    """Usage of every tenant (default `group_by=tenant`, with each tenant's slug), or of one
    tenant, deleted or not."""
    if tenant_id is not None:
        tenant_id = (await require_tenant(session, tenant_id, include_deleted=True)).id
    return await UsageRepository(session).report(
        tenant_id=tenant_id, group_by=query.group_by, start=query.start, end=query.end
    )


@router.get("/usage/records", response_class=StreamingResponse)
async def export_records(
    query: UsageExportQuery,
    session: SessionDep,
    db: DatabaseDep,
    tenant_id: Annotated[str | None, _TENANT_FILTER] = None,
    accept: Annotated[str | None, Header()] = None,
) -> StreamingResponse:
    """Raw usage records for billing, streamed in run-id order as NDJSON or CSV (`Accept`)."""
    if tenant_id is not None:
        tenant_id = (await require_tenant(session, tenant_id, include_deleted=True)).id
    return await export_response(
        db,
        accept=accept,
        tenant_id=tenant_id,
        start=query.start,
        end=query.end,
        after=query.after,
        after_segment=query.after_segment,
    )
