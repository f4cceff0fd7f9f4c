"""`/admin/tenants` routes: thin wrappers over `tenants.tenant.service`."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Response, status

from gateway.core.db import SessionDep
from tenants.pagination import ListBody, PageDep
from tenants.tenant import service
from tenants.tenant.schemas import TenantCreate, TenantPublic, TenantUpdate, tenant_public

router = APIRouter(prefix="/tenants")


@router.post("", status_code=status.HTTP_201_CREATED, response_model=TenantPublic)
async def create_tenant(body: TenantCreate, session: SessionDep) -> TenantPublic:
    """Create a tenant (slug unique and immutable)."""
    return tenant_public(await service.create_tenant(session, body))


@router.get("", response_model=ListBody[TenantPublic])
async def list_tenants(session: SessionDep, page: PageDep) -> dict[str, Any]:
    """Tenants that are not deleted, oldest first: `{"data": [...], "has_more": bool}`."""
    return (await service.list_tenants(session, page)).render(tenant_public)


@router.get("/{tenant_id}", response_model=TenantPublic)
async def get_tenant(tenant_id: str, session: SessionDep) -> TenantPublic:
    """One tenant (404 if unknown or deleted)."""
    return tenant_public(await service.require_tenant(session, tenant_id))


@router.patch("/{tenant_id}", response_model=TenantPublic)
async def update_tenant(tenant_id: str, body: TenantUpdate, session: SessionDep) -> TenantPublic:
    """Change name, status or limits (the limit keys sent replace the stored ones)."""
    return tenant_public(await service.update_tenant(session, tenant_id, body))


@router.delete("/{tenant_id}", status_code=status.HTTP_204_NO_CONTENT)
async def delete_tenant(tenant_id: str, session: SessionDep) -> Response:
    """Soft-delete the tenant and revoke its keys; its usage stays readable."""
    await service.delete_tenant(session, tenant_id)
    return Response(status_code=status.HTTP_204_NO_CONTENT)
