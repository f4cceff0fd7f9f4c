"""Tenants: the client apps served by the gateway."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlmodel import Field, SQLModel

from tenants.models.columns import created_at_field, json_field, timestamp_field


class Tenant(SQLModel, table=True):
    __tablename__ = "tenants"

    id: str = Field(primary_key=True, max_length=40)
    slug: str = Field(unique=True, index=True, max_length=40)
    name: str = Field(max_length=200)
    status: str = Field(default="active", max_length=16)
    """`active` or `suspended`; a deleted tenant keeps its row (usage stays readable)."""
    limits: dict[str, Any] | None = json_field()
    allowed_models: list[str] | None = json_field()
    """Models the tenant's agents may name; None: any model."""
    created_at: datetime = created_at_field()
    updated_at: datetime | None = timestamp_field()
    deleted_at: datetime | None = timestamp_field()
