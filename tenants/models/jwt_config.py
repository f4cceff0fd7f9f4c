"""End-user JWT verification config: one per tenant, found by its globally unique issuer."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import Column, Text
from sqlmodel import Field, SQLModel

from tenants.models.columns import created_at_field, json_field, timestamp_field


class JwtConfig(SQLModel, table=True):
    __tablename__ = "jwt_configs"

    tenant_id: str = Field(primary_key=True, foreign_key="tenants.id", max_length=40)
    mode: str = Field(max_length=8)
    """`hs256`, `rs256` or `es256`: the one algorithm accepted for the tenant's tokens."""
    issuer: str = Field(unique=True, index=True, max_length=512)
    public_key: str | None = Field(default=None, sa_column=Column(Text))
    """PEM public key (rs256 / es256), or null when `jwks` is set."""
    jwks: dict[str, Any] | None = json_field()
    secret_encrypted: str | None = Field(default=None, sa_column=Column(Text))
    """The HS256 secret, Fernet-encrypted under a key derived from GATEWAY_SECRET_KEY."""
    created_at: datetime = created_at_field()
    updated_at: datetime | None = timestamp_field()
