"""`GET /v1/agents`: the agents the calling tenant can run."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request

from gateway.auth.dependencies import RunsPrincipal
from gateway.core.db import SessionDep
from gateway.core.json_body import JsonBodyRoute
from gateway.core.state import app_state
from tenants.agent.repository import AgentRepository
from tenants.agent.spec import AGENT_NAME_PATTERN, stored_spec
from tenants.pagination import PageParams, cursor_params

router = APIRouter(route_class=JsonBodyRoute, tags=["agents"])
NamedPageDep = Annotated[
    PageParams,
    Depends(cursor_params(AGENT_NAME_PATTERN, "Name of the last agent already seen.")),
]


@router.get("/agents", summary="Agents this tenant can run")
async def list_agents(
    principal: RunsPrincipal,
    session: SessionDep,
    request: Request,
    page: NamedPageDep,
) -> dict[str, Any]:
    """The tenant's agents by name, a page at a time (`after`: the last name received)."""
    default_model = app_state(request).settings.default_model
    rows = await AgentRepository(session).list_active_page(principal.tenant_id, page)
    data = []
    for agent, version in rows.items:
        spec = stored_spec(version.spec)
        data.append(
            {
                "object": "agent",
                "name": agent.name,
                "description": spec.description,
                "model": spec.model or default_model,
                "version": version.version,
            }
        )
    return {"object": "list", "data": data, "has_more": rows.has_more}
