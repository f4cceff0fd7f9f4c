"""`GET /v1/agents`: the agents the calling tenant can run."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query, Request

from gateway.auth.dependencies import RunsPrincipal
from gateway.core.db import SessionDep
from gateway.core.json_body import JsonBodyRoute
from gateway.core.state import app_state
from tenants.agent.repository import AgentRepository
from tenants.agent.spec import AGENT_NAME_PATTERN, AgentSpec
from tenants.pagination import DEFAULT_LIMIT, MAX_LIMIT, PageParams

router = APIRouter(route_class=JsonBodyRoute, tags=["agents"])


@router.get("/agents", summary="Agents this tenant can run")
async def list_agents(
    principal: RunsPrincipal,
    session: SessionDep,
    request: Request,
    limit: Annotated[
        int, Query(ge=1, le=MAX_LIMIT, description="Agents per page (1..100).")
    ] = DEFAULT_LIMIT,
    after: Annotated[
        str | None,
        Query(pattern=AGENT_NAME_PATTERN, description="Name of the last agent already seen."),
    ] = None,
) -> dict[str, Any]:
    """The tenant's agents by name, a page at a time (`after`: the last name received)."""
    default_model = app_state(request).settings.default_model
    page = await AgentRepository(session).list_active_page(
        principal.tenant_id, PageParams(limit=limit, after=after)
    )
    data = []
    for agent, version in page.items:
        spec = AgentSpec.model_validate(version.spec)
        data.append(
            {
                "object": "agent",
                "name": agent.name,
                "description": spec.description,
                "model": spec.model or default_model,
                "version": version.version,
            }
        )
    return {"object": "list", "data": data, "has_more": page.has_more}
