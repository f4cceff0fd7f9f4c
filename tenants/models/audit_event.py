"""Audit events: one row per admin mutation (who, what, which target, which request)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlmodel import Field, SQLModel

from tenants.models.columns import created_at_field, json_field


class AuditEvent(SQLModel, table=True):
    __tablename__ = "audit_events"

    id: str = Field(primary_key=True, max_length=40)
    actor: str = Field(index=True, max_length=100)
    """`admin-token`, `user:<username>` or `cli`."""
    action: str = Field(index=True, max_length=64)
    """`tenant.create`, `key.revoke`, `agent.put`, `jwt.put`, `user.create`, …"""
    target_type: str = Field(max_length=32)
    target_id: str | None = Field(default=None, max_length=128)
    tenant_id: str | None = Field(default=None, index=True, max_length=40)
    request_id: str | None = Field(default=None, max_length=128)
    details: dict[str, Any] | None = json_field()
    """Non-secret facts about the change (changed field names, scopes, mode)."""
    created_at: datetime = created_at_field()
