"""Response bodies of the agent routes (the request body is `tenants.agent.spec.AgentSpec`)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel

from gateway.core.clock import rfc3339
from tenants.models import Agent, AgentVersion


class AgentPublic(BaseModel):
    """An agent with the spec of its active version."""

    id: str
    object: Literal["agent"] = "agent"
    name: str
    active_version: int
    latest_version: int
    spec: dict[str, Any]
    created_at: str
    updated_at: str | None


class AgentVersionPublic(BaseModel):
    """One immutable version of an agent."""

    object: Literal["agent.version"] = "agent.version"
    version: int
    spec: dict[str, Any]
    created_at: str
    active: bool


def agent_public(agent: Agent, active: AgentVersion) -> AgentPublic:
    """Render an agent and its active version."""
    return AgentPublic(
        id=agent.id,
        name=agent.name,
        active_version=agent.active_version,
        latest_version=agent.latest_version,
        spec=active.spec,
        created_at=rfc3339(agent.created_at) or "",
        updated_at=rfc3339(agent.updated_at),
    )


def version_public(version: AgentVersion, agent: Agent) -> AgentVersionPublic:
    """Render a version; `active` tells whether it is the one that runs."""
    return AgentVersionPublic(
        version=version.version,
        spec=version.spec,
        created_at=rfc3339(version.created_at) or "",
        active=version.version == agent.active_version,
    )
