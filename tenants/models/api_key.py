"""API keys: stored only as an HMAC-SHA256 of the plaintext."""

from __future__ import annotations

from datetime import datetime

from sqlmodel import Field, SQLModel

from tenants.models.columns import created_at_field, json_field, timestamp_field

KEY_PREFIX = "gw_"
"""How every API key starts (`tenants.api_key.keys` has the whole format)."""


class ApiKey(SQLModel, table=True):
    __tablename__ = "api_keys"

    id: str = Field(primary_key=True, max_length=40)
    tenant_id: str = Field(foreign_key="tenants.id", index=True, max_length=40)
    name: str = Field(max_length=200)
    key_hash: str = Field(unique=True, index=True, max_length=64)
    prefix: str = Field(max_length=16)
    last4: str = Field(max_length=4)
    scopes: list[str] | None = json_field()
    created_at: datetime = created_at_field()
    expires_at: datetime | None = timestamp_field()
    revoked_at: datetime | None = timestamp_field()
    last_used_at: datetime | None = timestamp_field()
