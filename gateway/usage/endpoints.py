"""`GET /v1/usage`: the calling tenant's usage report (SPEC §5.2)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from gateway.auth.dependencies import UsagePrincipal
from gateway.core.db import SessionDep
from tenants.usage.repository import UsageRepository
from tenants.usage.schemas import TenantUsageQuery

router = APIRouter(tags=["usage"])


@router.get("/usage", summary="This tenant's usage, grouped")
async def get_usage(
    principal: UsagePrincipal, query: TenantUsageQuery, session: SessionDep
) -> dict[str, Any]:
    return await UsageRepository(session).report(
        tenant_id=principal.tenant_id, group_by=query.group_by, start=query.start, end=query.end
    )
