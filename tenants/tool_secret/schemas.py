"""Response bodies of the tool-secret routes."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field

from gateway.core.clock import rfc3339
from tenants.models import ToolSecret


class ToolSecretPublic(BaseModel):
    """The state of a tenant's tool-signing secret (never the secret itself)."""

    object: Literal["tool_secret"] = "tool_secret"
    tenant_id: str
    created_at: str
    rotated_at: str | None
    previous_expires_at: str | None = Field(
        description="Until then the previous secret signs alongside the current one."
    )


class ToolSecretCreated(ToolSecretPublic):
    """The answer to a creation or rotation: the new secret, shown this once."""

    secret: str


def secret_public(row: ToolSecret) -> ToolSecretPublic:
    return ToolSecretPublic(
        tenant_id=row.tenant_id,
        created_at=rfc3339(row.created_at) or "",
        rotated_at=rfc3339(row.rotated_at),
        previous_expires_at=rfc3339(row.previous_expires_at),
    )


def secret_created(row: ToolSecret, secret: str) -> ToolSecretCreated:
    return ToolSecretCreated(**secret_public(row).model_dump(), secret=secret)
