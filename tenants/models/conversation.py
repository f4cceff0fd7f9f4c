"""Conversations (server-side multi-turn state) and their items, in order."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, Column, UniqueConstraint
from sqlmodel import Field, SQLModel

from tenants.models.columns import created_at_field, json_field, timestamp_field


class Conversation(SQLModel, table=True):
    __tablename__ = "conversations"

    id: str = Field(primary_key=True, max_length=40)
    tenant_id: str = Field(foreign_key="tenants.id", index=True, max_length=40)
    user: str | None = Field(default=None, max_length=256)
    """The end user (JWT `sub`) who created it; None for an API key."""
    # `metadata` is taken by SQLModel itself: the attribute is `meta`, the column `metadata`.
    meta: dict[str, Any] | None = Field(default=None, sa_column=Column("metadata", JSON))
    created_at: datetime = created_at_field()
    updated_at: datetime | None = timestamp_field()


class ConversationItem(SQLModel, table=True):
    __tablename__ = "conversation_items"
    # The unique (conversation_id, position) index also serves the ordered listing.
    __table_args__ = (
        UniqueConstraint("conversation_id", "position", name="uq_conversation_items_position"),
    )

    id: int | None = Field(default=None, primary_key=True)
    conversation_id: str = Field(foreign_key="conversations.id", max_length=40, ondelete="CASCADE")
    position: int
    item: dict[str, Any] = json_field(nullable=False)
    """One Agents SDK input item (a message, a tool call, a tool output...)."""
    created_at: datetime = created_at_field()
