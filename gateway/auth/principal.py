"""The authenticated caller of a /v1 request."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

ALL_SCOPES = frozenset({"runs", "conversations", "usage"})


@dataclass(frozen=True, slots=True)
class Principal:
    """Who is calling: the tenant, the credential, its scopes, the end user if known."""

    tenant_id: str
    tenant_slug: str
    tenant_status: str
    key_id: str | None
    scopes: frozenset[str]
    limits: dict[str, Any] | None = None
    user: str | None = None
    expires_at: datetime | None = None
