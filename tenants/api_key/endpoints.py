"""`/admin/tenants/{tenant_id}/keys` routes: thin wrappers over `tenants.api_key.service`;
every mutation is audited and invalidates the tenant's cached credentials on every replica."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Response, status

from gateway.core.clock import rfc3339
from gateway.core.config import SettingsDep
from gateway.core.db import SessionDep
from gateway.core.json_body import JsonBodyRoute
from tenants.admin.context import AdminContextDep
from tenants.api_key import service
from tenants.api_key.schemas import (
    KeyCreate,
    KeyCreated,
    KeyPublic,
    KeyUpdate,
    key_created,
    key_public,
)
from tenants.pagination import ListBody, PageDep

router = APIRouter(route_class=JsonBodyRoute, prefix="/tenants/{tenant_id}/keys")


@router.post("", status_code=status.HTTP_201_CREATED, response_model=KeyCreated)
async def issue_key(
    tenant_id: str, body: KeyCreate, ctx: AdminContextDep, settings: SettingsDep
) -> KeyCreated:
    """Issue a key; the plaintext `key` is in this response and never again."""
    key, plaintext = await service.issue_key(ctx.session, settings, tenant_id, body)
    await ctx.done(
        "key.create",
        "api_key",
        key.id,
        tenant_id=key.tenant_id,
        details={"name": key.name, "scopes": key.scopes, "expires_at": rfc3339(key.expires_at)},
        invalidate=False,
    )
    return key_created(key, plaintext)


@router.get("", response_model=ListBody[KeyPublic])
async def list_keys(tenant_id: str, session: SessionDep, page: PageDep) -> dict[str, Any]:
    """The tenant's keys, shown as `prefix…last4` (revoked ones carry `revoked_at`)."""
    return (await service.list_keys(session, tenant_id, page)).render(key_public)


@router.patch("/{key_id}", response_model=KeyPublic)
async def update_key(
    tenant_id: str, key_id: str, body: KeyUpdate, ctx: AdminContextDep
) -> KeyPublic:
    """Set or clear `expires_at` (rotation: the old key keeps working until then)."""
    key = await service.update_key(ctx.session, tenant_id, key_id, body)
    await ctx.done(
        "key.update",
        "api_key",
        key.id,
        tenant_id=key.tenant_id,
        details={"expires_at": rfc3339(key.expires_at)},
    )
    return key_public(key)


@router.delete("/{key_id}", status_code=status.HTTP_204_NO_CONTENT)
async def revoke_key(tenant_id: str, key_id: str, ctx: AdminContextDep) -> Response:
    """Revoke a key (idempotent); refused on every replica within 1 s."""
    key, revoked = await service.revoke_key(ctx.session, tenant_id, key_id)
    if revoked:  # revoking a revoked key changes nothing: nothing to audit
        await ctx.done("key.revoke", "api_key", key.id, tenant_id=key.tenant_id)
    return Response(status_code=status.HTTP_204_NO_CONTENT)
