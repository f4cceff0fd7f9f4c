"""Tenant upstreams: a tenant's own OpenAI-compatible model endpoint and key."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Column, Text, UniqueConstraint
from sqlmodel import Field, SQLModel

from tenants.models.columns import created_at_field, timestamp_field


class TenantUpstream(SQLModel, table=True):
    __tablename__ = "tenant_upstreams"
    __table_args__ = (
        UniqueConstraint("tenant_id", "name", name="uq_tenant_upstreams_tenant_name"),
    )

    id: str = Field(primary_key=True, max_length=40)
    tenant_id: str = Field(foreign_key="tenants.id", index=True, max_length=40)
    name: str = Field(max_length=64)
    base_url: str = Field(max_length=2048)
    api: str = Field(max_length=24)
    """`responses` or `chat_completions`: the API the Agents SDK speaks to it."""
    api_key_encrypted: str = Field(sa_column=Column(Text, nullable=False))
    key_last4: str = Field(max_length=4)
    version: int = 1
    """Bumped by every PUT: the data plane caches one client per (upstream, version)."""
    created_at: datetime = created_at_field()
    updated_at: datetime | None = timestamp_field()
