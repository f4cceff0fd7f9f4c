"""The /admin API: every route requires the admin credential (mounted at `/admin`)."""

from __future__ import annotations

from fastapi import APIRouter, Depends

from tenants.admin.auth import require_admin
from tenants.agent.endpoints import router as agents_router
from tenants.api_key.endpoints import router as keys_router
from tenants.tenant.endpoints import router as tenants_router
from tenants.usage.endpoints import router as usage_router

admin_router = APIRouter(dependencies=[Depends(require_admin)], tags=["admin"])
admin_router.include_router(tenants_router)
admin_router.include_router(keys_router)
admin_router.include_router(agents_router)
admin_router.include_router(usage_router)
