"""Request and response bodies of the API key routes.

The plaintext key appears only in `KeyCreated`, the answer to the request that issued it; the
hash never leaves the database.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
)

from gateway.core.clock import UtcDatetime, rfc3339, utcnow
from gateway.core.json_types import UniqueItems
from gateway.core.text import DisplayName
from tenants.models import ApiKey

Scope = Literal["runs", "conversations", "usage"]
ALL_SCOPES: tuple[Scope, ...] = ("runs", "conversations", "usage")

KeyName = DisplayName


def _in_the_future(value: datetime) -> datetime:
    if value <= utcnow():
        raise ValueError("must be in the future")
    return value


FutureDatetime = Annotated[UtcDatetime, AfterValidator(_in_the_future)]
"""An RFC 3339 time with an offset, later than now, in UTC (a key's `expires_at`)."""


class KeyCreate(BaseModel):
    """`POST /admin/tenants/{id}/keys`."""

    model_config = ConfigDict(extra="forbid")

    name: KeyName
    scopes: (
        Annotated[list[Scope], Field(min_length=1, max_length=len(ALL_SCOPES)), UniqueItems] | None
    ) = None
    """Default (absent or null): every scope."""
    expires_at: FutureDatetime | None = None
    """RFC 3339 with an offset, in the future."""

    def granted_scopes(self) -> list[str]:
        """The scopes to store, in canonical order."""
        wanted = set(self.scopes) if self.scopes is not None else set(ALL_SCOPES)
        return [scope for scope in ALL_SCOPES if scope in wanted]


class KeyUpdate(BaseModel):
    """`PATCH /admin/tenants/{id}/keys/{key_id}`: set or clear the expiry (key rotation).

    Rotation: issue a new key, then give the old one an `expires_at` a little in the future so
    both work while clients switch over. `expires_at` must be sent (null clears it).
    """

    model_config = ConfigDict(extra="forbid")

    expires_at: FutureDatetime | None


class KeyPublic(BaseModel):
    """A key as listed: never the plaintext nor its hash."""

    id: str
    object: Literal["api_key"] = "api_key"
    name: str
    prefix: str
    last4: str
    display: str
    scopes: list[str]
    created_at: str
    expires_at: str | None
    revoked_at: str | None
    last_used_at: str | None


class KeyCreated(BaseModel):
    """The answer to issuing a key: the only time the plaintext `key` is shown."""

    id: str
    object: Literal["api_key"] = "api_key"
    key: str
    prefix: str
    last4: str
    display: str
    name: str
    scopes: list[str]
    created_at: str
    expires_at: str | None


def display(key: ApiKey) -> str:
    """`prefix…last4`."""
    return f"{key.prefix}\u2026{key.last4}"


def key_public(key: ApiKey) -> KeyPublic:
    """Render a key row for a list."""
    return KeyPublic(
        id=key.id,
        name=key.name,
        prefix=key.prefix,
        last4=key.last4,
        display=display(key),
        scopes=list(ALL_SCOPES if key.scopes is None else key.scopes),
        created_at=rfc3339(key.created_at) or "",
        expires_at=rfc3339(key.expires_at),
        revoked_at=rfc3339(key.revoked_at),
        last_used_at=rfc3339(key.last_used_at),
    )


def key_created(key: ApiKey, plaintext: str) -> KeyCreated:
    """Render a freshly issued key with its plaintext."""
    return KeyCreated(
        id=key.id,
        key=plaintext,
        prefix=key.prefix,
        last4=key.last4,
        display=display(key),
        name=key.name,
        scopes=list(ALL_SCOPES if key.scopes is None else key.scopes),
        created_at=rfc3339(key.created_at) or "",
        expires_at=rfc3339(key.expires_at),
    )
