"""`/admin/tenants/{tenant_id}/upstreams`: a tenant's own model upstreams. Every mutation is
audited and drops the cached clients on every replica."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Path, Response, status

from gateway.core.config import SettingsDep
from gateway.core.db import SessionDep
from gateway.core.egress import EgressPolicy
from gateway.core.json_body import JsonBodyRoute
from tenants.admin.context import AdminContextDep
from tenants.pagination import ListBody, PageDep
from tenants.upstream import service
from tenants.upstream.schemas import (
    UPSTREAM_NAME_PATTERN,
    UpstreamPublic,
    UpstreamPut,
    upstream_public,
)

router = APIRouter(route_class=JsonBodyRoute, prefix="/tenants/{tenant_id}/upstreams")

UpstreamName = Annotated[str, Path(pattern=UPSTREAM_NAME_PATTERN, description="Upstream name.")]


@router.put(
    "/{name}",
    response_model=UpstreamPublic,
    responses={201: {"model": UpstreamPublic, "description": "Upstream created."}},
)
async def put_upstream(
    tenant_id: str,
    name: UpstreamName,
    body: UpstreamPut,
    ctx: AdminContextDep,
    settings: SettingsDep,
    response: Response,
) -> UpstreamPublic:
    """Create (201) or replace (200) the upstream; agents naming it use the change on every
    replica within a second."""
    policy = EgressPolicy.parse(settings.egress_allow)
    row, created = await service.put_upstream(
        ctx.session, settings.secret_key, policy, tenant_id, name, body
    )
    await ctx.done(
        "upstream.create" if created else "upstream.put",
        "upstream",
        row.name,
        tenant_id=row.tenant_id,
        details={"base_url": row.base_url, "api": row.api, "version": row.version},
    )
    response.status_code = status.HTTP_201_CREATED if created else status.HTTP_200_OK
    return upstream_public(row)


@router.get("", response_model=ListBody[UpstreamPublic])
async def list_upstreams(tenant_id: str, session: SessionDep, page: PageDep) -> dict[str, Any]:
    """The tenant's upstreams, oldest first."""
    return (await service.list_upstreams(session, tenant_id, page)).render(upstream_public)


@router.get("/{name}", response_model=UpstreamPublic)
async def get_upstream(tenant_id: str, name: UpstreamName, session: SessionDep) -> UpstreamPublic:
    """One upstream (its key only as the last 4 characters)."""
    return upstream_public(await service.get_upstream(session, tenant_id, name))


@router.delete("/{name}", status_code=status.HTTP_204_NO_CONTENT)
async def delete_upstream(tenant_id: str, name: UpstreamName, ctx: AdminContextDep) -> Response:
    """Delete the upstream (409 while an agent's active version uses it)."""
    await service.delete_upstream(ctx.session, tenant_id, name)
    await ctx.done("upstream.delete", "upstream", name, tenant_id=tenant_id)
    return Response(status_code=status.HTTP_204_NO_CONTENT)
