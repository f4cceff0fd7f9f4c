"""`/admin/tenants/{tenant_id}/tool-secret`: create or rotate the tenant's tool-signing secret
(answered once) and read its state. Audited; the data plane's cached secrets are dropped on
every replica."""

from __future__ import annotations

from fastapi import APIRouter, Response, status

from gateway.core.config import SettingsDep
from gateway.core.db import SessionDep
from gateway.core.json_body import JsonBodyRoute
from tenants.admin.context import AdminContextDep
from tenants.tool_secret import service
from tenants.tool_secret.schemas import (
    ToolSecretCreated,
    ToolSecretPublic,
    secret_created,
    secret_public,
)

router = APIRouter(route_class=JsonBodyRoute, prefix="/tenants/{tenant_id}/tool-secret")


@router.post(
    "",
    response_model=ToolSecretCreated,
    responses={201: {"model": ToolSecretCreated, "description": "First secret created."}},
)
async def rotate_tool_secret(
    tenant_id: str, ctx: AdminContextDep, settings: SettingsDep, response: Response
) -> ToolSecretCreated:
    """Create (201) or rotate (200) the secret that signs the tenant's HTTP tool calls. The
    answer holds the new `secret`, this once; after a rotation the previous secret keeps
    signing alongside it for 24 hours."""
    row, secret, created = await service.rotate(ctx.session, settings.secret_key, tenant_id)
    await ctx.done(
        "tool_secret.create" if created else "tool_secret.rotate",
        "tool_secret",
        row.tenant_id,
        tenant_id=row.tenant_id,
    )
    response.status_code = status.HTTP_201_CREATED if created else status.HTTP_200_OK
    return secret_created(row, secret)


@router.get("", response_model=ToolSecretPublic)
async def get_tool_secret(tenant_id: str, session: SessionDep) -> ToolSecretPublic:
    """When the secret was created and last rotated (the secret is never shown again)."""
    return secret_public(await service.get_status(session, tenant_id))
