"""Bodies and renderings of the conversations API."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, field_validator

from gateway.core.clock import rfc3339
from gateway.core.metadata import Metadata, bounded_metadata
from tenants.models import Conversation, ConversationItem

ITEM_ID_PREFIX = "item_"


class ConversationCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    metadata: Metadata = None

    @field_validator("metadata")
    @classmethod
    def _bounded_metadata(cls, value: dict[str, Any] | None) -> dict[str, Any] | None:
        return bounded_metadata(value)


class ConversationPublic(BaseModel):
    id: str
    object: str = "conversation"
    created_at: str
    metadata: dict[str, Any]


def render_conversation(row: Conversation) -> dict[str, Any]:
    return {
        "id": row.id,
        "object": "conversation",
        "created_at": rfc3339(row.created_at),
        "metadata": row.meta or {},
    }


def item_id(position: int) -> str:
    """An item's id within its conversation (also the `after` cursor of the items list)."""
    return f"{ITEM_ID_PREFIX}{position}"


MAX_POSITION = 2**31 - 1
"""The largest position the column holds (a 32-bit integer on PostgreSQL)."""


def item_position(cursor: str) -> int | None:
    """The position an `after` cursor names (None: not an item id, so no item matches); one
    past any position a conversation can hold is clamped to the largest (an empty page)."""
    digits = cursor.removeprefix(ITEM_ID_PREFIX)
    if not (cursor.startswith(ITEM_ID_PREFIX) and digits.isascii() and digits.isdigit()):
        return None
    return min(int(digits), MAX_POSITION)


_HIDDEN = frozenset({"id", "provider_data"})


def render_item(row: ConversationItem) -> dict[str, Any]:
    """The stored SDK input item (role/content for messages), with our id; the SDK's own
    bookkeeping (`provider_data`: the upstream's model and response id) is not shown."""
    fields = {k: v for k, v in row.item.items() if k not in _HIDDEN}
    return {"id": item_id(row.position), **fields, "created_at": rfc3339(row.created_at)}
