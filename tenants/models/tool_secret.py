"""Tool-signing secrets: one per tenant, the previous one kept for a grace period after rotation."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Column, Text
from sqlmodel import Field, SQLModel

from tenants.models.columns import created_at_field, timestamp_field


class ToolSecret(SQLModel, table=True):
    __tablename__ = "tool_secrets"

    tenant_id: str = Field(primary_key=True, foreign_key="tenants.id", max_length=40)
    secret_encrypted: str = Field(sa_column=Column(Text, nullable=False))
    """The current secret, Fernet-encrypted under a key derived from GATEWAY_SECRET_KEY."""
    previous_encrypted: str | None = Field(default=None, sa_column=Column(Text))
    """The secret before the last rotation; it keeps signing until `previous_expires_at`."""
    previous_expires_at: datetime | None = timestamp_field()
    created_at: datetime = created_at_field()
    rotated_at: datetime | None = timestamp_field()
