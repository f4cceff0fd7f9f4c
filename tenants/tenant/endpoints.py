"""`/admin/tenants` routes: thin wrappers over `tenants.tenant.service`; every mutation is
audited and invalidates the tenant's cached credentials on every replica."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request, Response, status

from gateway.core.config import SettingsDep
from gateway.core.db import SessionDep
from gateway.core.json_body import JsonBodyRoute
from gateway.core.state import app_state
from tenants.admin.context import AdminContextDep
from tenants.pagination import ListBody, PageDep
from tenants.scoping import require_tenant
from tenants.tenant import service
from tenants.tenant.budgets import count_past_usage, sets_a_budget
from tenants.tenant.schemas import TenantCreate, TenantPublic, TenantUpdate, tenant_public

router = APIRouter(route_class=JsonBodyRoute, prefix="/tenants")


# Where a new tenant's id leads (OpenAPI links: clients and fuzzers follow them). Only
# operations that hold for a tenant just created: its JWT config, say, does not exist yet.
_TENANT_LINKS = {
    name: {"operationId": operation, "parameters": {"tenant_id": "$response.body#/id"}}
    for name, operation in {
        "GetTenant": "get_tenant_admin_tenants__tenant_id__get",
        "UpdateTenant": "update_tenant_admin_tenants__tenant_id__patch",
        "DeleteTenant": "delete_tenant_admin_tenants__tenant_id__delete",
        "IssueKey": "issue_key_admin_tenants__tenant_id__keys_post",
        "ListKeys": "list_keys_admin_tenants__tenant_id__keys_get",
        "ListAgents": "list_agents_admin_tenants__tenant_id__agents_get",
        "PutJwtConfig": "put_jwt_config_admin_tenants__tenant_id__jwt_put",
        "TenantUsage": "tenant_usage_admin_tenants__tenant_id__usage_get",
    }.items()
}


@router.post(
    "",
    status_code=status.HTTP_201_CREATED,
    response_model=TenantPublic,
    responses={201: {"links": _TENANT_LINKS}},
)
async def create_tenant(
    body: TenantCreate, ctx: AdminContextDep, settings: SettingsDep
) -> TenantPublic:
    """Create a tenant (slug unique and immutable); limits left out of the body are the
    deployment's `GATEWAY_DEFAULT_TENANT_LIMITS` (none by default: unlimited)."""
    tenant = await service.create_tenant(ctx.session, body, settings.default_tenant_limits)
    await ctx.done(
        "tenant.create", "tenant", tenant.id, tenant_id=tenant.id, details={"slug": tenant.slug}
    )
    return tenant_public(tenant)


@router.get("", response_model=ListBody[TenantPublic])
async def list_tenants(session: SessionDep, page: PageDep) -> dict[str, Any]:
    """Tenants that are not deleted, oldest first: `{"data": [...], "has_more": bool}`."""
    return (await service.list_tenants(session, page)).render(tenant_public)


@router.get("/{tenant_id}", response_model=TenantPublic)
async def get_tenant(tenant_id: str, session: SessionDep) -> TenantPublic:
    """One tenant (404 if unknown or deleted)."""
    return tenant_public(await require_tenant(session, tenant_id))


@router.patch("/{tenant_id}", response_model=TenantPublic)
async def update_tenant(
    tenant_id: str, body: TenantUpdate, ctx: AdminContextDep, request: Request
) -> TenantPublic:
    """Change name, status or limits (the limit keys sent replace the stored ones). A day or
    month limit set counts the tenant's usage so far in that window."""
    tenant = await service.update_tenant(ctx.session, tenant_id, body)
    if sets_a_budget(body):
        await count_past_usage(ctx.session, tenant.id, app_state(request).quotas)
    changed = sorted(body.model_dump(exclude_unset=True, exclude={"slug"}))
    details: dict[str, Any] = {"fields": changed}
    if body.status is not None:
        details["status"] = body.status
    await ctx.done("tenant.update", "tenant", tenant.id, tenant_id=tenant.id, details=details)
    return tenant_public(tenant)


@router.delete("/{tenant_id}", status_code=status.HTTP_204_NO_CONTENT)
async def delete_tenant(tenant_id: str, ctx: AdminContextDep) -> Response:
    """Soft-delete the tenant, revoke its keys and JWT config; its usage stays readable."""
    tenant = await service.delete_tenant(ctx.session, tenant_id)
    await ctx.done("tenant.delete", "tenant", tenant.id, tenant_id=tenant.id)
    return Response(status_code=status.HTTP_204_NO_CONTENT)
