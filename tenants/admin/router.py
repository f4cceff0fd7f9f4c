"""The /admin API (mounted at `/admin`): `POST /login` is open, every other route requires an
admin credential (`require_admin`: admin token or admin JWT; viewers may only GET)."""

from __future__ import annotations

from fastapi import APIRouter, Depends

from gateway.core.json_body import JsonBodyRoute
from gateway.core.openapi import error_responses
from tenants.admin.auth import require_admin
from tenants.admin.login import router as login_router
from tenants.agent.endpoints import router as agents_router
from tenants.api_key.endpoints import router as keys_router
from tenants.audit.endpoints import router as audit_router
from tenants.jwt_config.endpoints import router as jwt_router
from tenants.price.endpoints import router as prices_router
from tenants.tenant.endpoints import router as tenants_router
from tenants.tool_secret.endpoints import router as tool_secret_router
from tenants.upstream.endpoints import router as upstreams_router
from tenants.usage.endpoints import router as usage_router

protected = APIRouter(
    route_class=JsonBodyRoute,
    dependencies=[Depends(require_admin)],
    responses=error_responses(400, 401, 403, 404, 409, 413, 422, 429),
)
protected.include_router(tenants_router)
protected.include_router(keys_router)
protected.include_router(agents_router)
protected.include_router(jwt_router)
protected.include_router(usage_router)
protected.include_router(prices_router)
protected.include_router(tool_secret_router)
protected.include_router(upstreams_router)
protected.include_router(audit_router)

admin_router = APIRouter(route_class=JsonBodyRoute, tags=["admin"])
admin_router.include_router(login_router, responses=error_responses(400, 401, 413, 422, 429))
admin_router.include_router(protected)
