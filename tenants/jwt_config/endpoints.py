"""`/admin/tenants/{tenant_id}/jwt` routes: thin wrappers over `tenants.jwt_config.service`."""

from __future__ import annotations

from fastapi import APIRouter, Response, status

from gateway.core.config import SettingsDep
from gateway.core.json_body import JsonBodyRoute
from tenants.admin.context import AdminContextDep
from tenants.jwt_config import service
from tenants.jwt_config.schemas import JwtConfigPublic, JwtConfigPut, config_public

router = APIRouter(route_class=JsonBodyRoute, prefix="/tenants/{tenant_id}/jwt")


@router.put("", response_model=JwtConfigPublic, response_model_exclude_none=False)
async def put_jwt_config(
    tenant_id: str, body: JwtConfigPut, ctx: AdminContextDep, settings: SettingsDep
) -> JwtConfigPublic:
    """Enable end-user JWTs; for `hs256` the answer holds the generated `secret`, once."""
    config, secret = await service.put_config(ctx.session, settings, tenant_id, body)
    await ctx.done(
        "jwt.put",
        "jwt_config",
        config.tenant_id,
        tenant_id=config.tenant_id,
        details={"mode": config.mode, "issuer": config.issuer},
    )
    return config_public(config, audience=settings.jwt_audience, secret=secret)


@router.get("", response_model=JwtConfigPublic)
async def get_jwt_config(
    tenant_id: str, ctx: AdminContextDep, settings: SettingsDep
) -> JwtConfigPublic:
    """The tenant's JWT config (the HS256 secret is never shown again)."""
    config = await service.get_config(ctx.session, tenant_id)
    return config_public(config, audience=settings.jwt_audience)


@router.delete("", status_code=status.HTTP_204_NO_CONTENT)
async def delete_jwt_config(tenant_id: str, ctx: AdminContextDep) -> Response:
    """Disable end-user JWTs for the tenant (takes effect on every replica within 1 s)."""
    await service.delete_config(ctx.session, tenant_id)
    await ctx.done("jwt.delete", "jwt_config", tenant_id, tenant_id=tenant_id)
    return Response(status_code=status.HTTP_204_NO_CONTENT)
