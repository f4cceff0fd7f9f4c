"""`GET /v1/agents`: the agents the calling tenant can run."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request

from gateway.auth.dependencies import RunsPrincipal
from gateway.core.db import SessionDep
from gateway.core.json_body import JsonBodyRoute
from gateway.core.state import app_state
from tenants.agent.repository import AgentRepository
from tenants.agent.spec import AgentSpec

router = APIRouter(route_class=JsonBodyRoute, tags=["agents"])


@router.get("/agents", summary="Agents this tenant can run")
async def list_agents(
    principal: RunsPrincipal, session: SessionDep, request: Request
) -> dict[str, Any]:
    default_model = app_state(request).settings.default_model
    rows = await AgentRepository(session).list_active(principal.tenant_id)
    data = []
    for agent, version in rows:
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
    return {"object": "list", "data": data, "has_more": False}
