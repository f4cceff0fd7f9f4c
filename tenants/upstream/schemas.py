"""Bodies of the tenant-upstream routes. The key is write-only: answers show its last 4."""

from __future__ import annotations

from typing import Annotated, Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, field_validator

from gateway.core.clock import rfc3339
from gateway.core.text import Url
from tenants.models import TenantUpstream

UPSTREAM_NAME_PATTERN = r"^[a-z0-9_-]{1,64}$"
UpstreamApi = Literal["responses", "chat_completions"]


class UpstreamPut(BaseModel):
    """`PUT /admin/tenants/{id}/upstreams/{name}`: create or replace the upstream."""

    model_config = ConfigDict(extra="forbid")

    base_url: Annotated[Url, Field(min_length=8, max_length=2048)]
    """The OpenAI-compatible base URL, e.g. `https://api.openai.com/v1`."""
    api_key: Annotated[
        str, StringConstraints(min_length=4, max_length=512, pattern=r"^[\x21-\x7e]+$")
    ]
    """The upstream's API key (stored encrypted, never shown again)."""
    api: UpstreamApi = "chat_completions"
    """The API the Agents SDK speaks to it (`chat_completions` works with most servers)."""

    @field_validator("base_url")
    @classmethod
    def _a_base(cls, value: str) -> str:
        """The client appends `/chat/completions` or `/responses` to the base URL: a query or
        a fragment would make every call's URL wrong, found only at run time."""
        parts = urlsplit(value)
        if parts.query or parts.fragment or "?" in value or "#" in value:
            raise ValueError(
                "a base URL takes no query or fragment (the API paths are appended to it)"
            )
        return value


class UpstreamPublic(BaseModel):
    """An upstream as the admin API shows it."""

    object: Literal["upstream"] = "upstream"
    id: str
    name: str
    base_url: str
    api: UpstreamApi
    api_key: str = Field(
        description="Only the last 4 characters: `…abcd` (`…` alone for a key under 16)."
    )
    version: int
    created_at: str
    updated_at: str | None


def upstream_public(row: TenantUpstream) -> UpstreamPublic:
    return UpstreamPublic(
        id=row.id,
        name=row.name,
        base_url=row.base_url,
        api="responses" if row.api == "responses" else "chat_completions",
        api_key=f"…{row.key_last4}",
        version=row.version,
        created_at=rfc3339(row.created_at) or "",
        updated_at=rfc3339(row.updated_at),
    )
