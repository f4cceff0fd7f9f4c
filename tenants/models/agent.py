"""Agents and their immutable, numbered spec versions."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import UniqueConstraint
from sqlmodel import Field, SQLModel

from tenants.models.columns import created_at_field, json_field, timestamp_field


class Agent(SQLModel, table=True):
    __tablename__ = "agents"
    __table_args__ = (UniqueConstraint("tenant_id", "name", name="uq_agents_tenant_name"),)

    id: str = Field(primary_key=True, max_length=40)
    tenant_id: str = Field(foreign_key="tenants.id", index=True, max_length=40)
    name: str = Field(max_length=64)
    active_version: int = Field(default=1)
    latest_version: int = Field(default=1)
    created_at: datetime = created_at_field()
    updated_at: datetime | None = timestamp_field()


class AgentVersion(SQLModel, table=True):
    __tablename__ = "agent_versions"
    __table_args__ = (UniqueConstraint("agent_id", "version", name="uq_agent_versions"),)

    id: int | None = Field(default=None, primary_key=True)
    agent_id: str = Field(foreign_key="agents.id", index=True, max_length=40, ondelete="CASCADE")
    version: int
    spec: dict[str, Any] = json_field(nullable=False)
    created_at: datetime = created_at_field()
