"""`GET /v1/models` and `GET /v1/models/{model}`: the OpenAI models API over the tenant's agents.

OpenAI-compatible clients list models to fill a picker or to check a name before they call
`/v1/chat/completions`; here a model is one of the calling tenant's agents (the `model` a chat
completion names), `owned_by` the tenant. An agent whose tools pause for approval is listed
too: Chat Completions answers it with 400 `approval_not_supported`.
"""

from __future__ import annotations

import re
from typing import Annotated, Any

from fastapi import APIRouter, Path

from gateway.auth.dependencies import RunsPrincipal
from gateway.core.db import SessionDep
from gateway.core.errors import NotFoundError
from gateway.core.json_body import JsonBodyRoute
from tenants.agent.repository import AgentRepository
from tenants.agent.spec import AGENT_NAME_PATTERN
from tenants.models import Agent

router = APIRouter(route_class=JsonBodyRoute, tags=["chat"])
_AGENT_NAME = re.compile(AGENT_NAME_PATTERN)


def model_object(agent: Agent, owner: str) -> dict[str, Any]:
    return {
        "id": agent.name,
        "object": "model",
        "created": int(agent.created_at.timestamp()),
        "owned_by": owner,
    }


@router.get("/models", summary="The tenant's agents as OpenAI models")
async def list_models(principal: RunsPrincipal, session: SessionDep) -> dict[str, Any]:
    rows = await AgentRepository(session).list_active(principal.tenant_id)
    return {
        "object": "list",
        "data": [model_object(agent, principal.tenant_slug) for agent, _ in rows],
    }


@router.get("/models/{model}", summary="One of the tenant's agents as an OpenAI model")
async def get_model(
    model: Annotated[str, Path()], principal: RunsPrincipal, session: SessionDep
) -> dict[str, Any]:
    """404 `model_not_found` for a name that is not one of the tenant's agents."""
    row = None
    if _AGENT_NAME.fullmatch(model):
        row = await AgentRepository(session).get_active(principal.tenant_id, model)
    if row is None:
        raise NotFoundError(f"No model named '{model}'.", code="model_not_found", param="model")
    return model_object(row[0], principal.tenant_slug)
