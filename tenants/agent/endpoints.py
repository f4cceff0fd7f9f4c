"""`/admin/tenants/{tenant_id}/agents` routes: thin wrappers over `tenants.agent.service`;
every mutation is audited and drops the cached active versions on every replica."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Path, Response, status

from gateway.core.config import SettingsDep
from gateway.core.db import SessionDep
from gateway.core.json_body import JsonBodyRoute
from tenants.admin.context import AdminContextDep
from tenants.agent import service
from tenants.agent.checks import check_spec, put_checked_agent
from tenants.agent.schemas import AgentPublic, AgentVersionPublic, agent_public, version_public
from tenants.agent.spec import AGENT_NAME_PATTERN, AgentSpec
from tenants.pagination import ListBody, NumberedPageDep, PageDep
from tenants.scoping import lock_tenant

router = APIRouter(route_class=JsonBodyRoute, prefix="/tenants/{tenant_id}/agents")

AgentName = Annotated[str, Path(pattern=AGENT_NAME_PATTERN, description="Agent name.")]


@router.put(
    "/{name}",
    response_model=AgentPublic,
    responses={201: {"model": AgentPublic, "description": "Agent created (version 1)."}},
)
async def put_agent(
    tenant_id: str,
    name: AgentName,
    spec: AgentSpec,
    ctx: AdminContextDep,
    response: Response,
    settings: SettingsDep,
) -> AgentPublic:
    """Create the agent (201) or store a new version of it (200); the new version is active."""
    agent, version, created = await put_checked_agent(ctx.session, settings, tenant_id, name, spec)
    await ctx.done(
        "agent.create" if created else "agent.put",
        "agent",
        agent.name,
        tenant_id=agent.tenant_id,
        details={"version": version.version},
    )
    response.status_code = status.HTTP_201_CREATED if created else status.HTTP_200_OK
    return agent_public(agent, version)


@router.get("", response_model=ListBody[AgentPublic])
async def list_agents(tenant_id: str, session: SessionDep, page: PageDep) -> dict[str, Any]:
    """The tenant's agents with their active specs, oldest first."""
    result = await service.list_agents(session, tenant_id, page)
    return result.render(lambda row: agent_public(*row))


@router.get("/{name}", response_model=AgentPublic)
async def get_agent(tenant_id: str, name: AgentName, session: SessionDep) -> AgentPublic:
    """One agent with the spec of its active version."""
    return agent_public(*await service.get_agent(session, tenant_id, name))


@router.delete("/{name}", status_code=status.HTTP_204_NO_CONTENT)
async def delete_agent(tenant_id: str, name: AgentName, ctx: AdminContextDep) -> Response:
    """Delete the agent and its versions."""
    await service.delete_agent(ctx.session, tenant_id, name)
    await ctx.done("agent.delete", "agent", name, tenant_id=tenant_id)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.get("/{name}/versions", response_model=ListBody[AgentVersionPublic])
async def list_versions(
    tenant_id: str, name: AgentName, session: SessionDep, page: NumberedPageDep
) -> dict[str, Any]:
    """Versions newest first; page with `after=<version number>`."""
    agent, versions = await service.list_versions(session, tenant_id, name, page)
    return versions.render(lambda version: version_public(version, agent))


@router.post("/{name}/versions/{version}/activate", response_model=AgentPublic)
async def activate_version(
    tenant_id: str, name: AgentName, version: int, ctx: AdminContextDep, settings: SettingsDep
) -> AgentPublic:
    """Make an existing version the active one (422 if it no longer passes the PUT checks:
    its upstream deleted, its model no longer allowed, a handoff target gone)."""
    await lock_tenant(ctx.session, tenant_id)
    agent, active = await service.activate_version(
        ctx.session,
        tenant_id,
        name,
        version,
        check=lambda spec: check_spec(ctx.session, settings, tenant_id, spec, name=name),
    )
    await ctx.done(
        "agent.activate",
        "agent",
        agent.name,
        tenant_id=agent.tenant_id,
        details={"version": active.version},
    )
    return agent_public(agent, active)
