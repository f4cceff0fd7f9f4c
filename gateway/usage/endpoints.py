"""`GET /v1/usage`: the calling tenant's usage report."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Header
from fastapi.responses import StreamingResponse

from gateway.auth.dependencies import UsagePrincipal
from gateway.core.db import DatabaseDep, SessionDep
from gateway.core.json_body import JsonBodyRoute
from tenants.usage.export import export_response
from tenants.usage.repository import UsageRepository
from tenants.usage.schemas import TenantUsageQuery, UsageExportQuery

router = APIRouter(route_class=JsonBodyRoute, tags=["usage"])


@router.get("/usage", summary="This tenant's usage, grouped")
async def get_usage(
    principal: UsagePrincipal, query: TenantUsageQuery, session: SessionDep
) -> dict[str, Any]:
    return await UsageRepository(session).report(
        tenant_id=principal.tenant_id, group_by=query.group_by, start=query.start, end=query.end
    )


@router.get(
    "/usage/records", summary="This tenant's raw usage records", response_class=StreamingResponse
)
async def export_records(
    principal: UsagePrincipal,
    query: UsageExportQuery,
    db: DatabaseDep,
    accept: Annotated[str | None, Header()] = None,
) -> StreamingResponse:
    """Raw usage records for billing, streamed in run-id order as NDJSON or CSV (`Accept`)."""
    return await export_response(
        db,
        accept=accept,
        tenant_id=principal.tenant_id,
        start=query.start,
        end=query.end,
        after=query.after,
        after_segment=query.after_segment,
    )
