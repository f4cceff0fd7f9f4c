"""Every query on the `conversations` and `conversation_items` tables.

Conversations are reached through `_owned_by(tenant_id, user)`, the one ownership filter: the
tenant always, and the end user too when the caller is one (a JWT principal sees only its own
conversations; an API key sees all of its tenant's). Items are only read or written after
their conversation passed that filter.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import ColumnElement, and_, func
from sqlmodel import col, delete, select
from sqlmodel.ext.asyncio.session import AsyncSession

from tenants.models import Conversation, ConversationItem
from tenants.pagination import Page, is_id


def _owned_by(tenant_id: str, user: str | None) -> ColumnElement[bool]:
    """The ownership filter every conversation query goes through."""
    owned = col(Conversation.tenant_id) == tenant_id
    if user is not None:
        return and_(owned, col(Conversation.user) == user)
    return owned


class ConversationRepository:
    """Reads and writes conversations within the caller's unit of work (which commits)."""

    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def get(
        self, tenant_id: str, user: str | None, conversation_id: str
    ) -> Conversation | None:
        """The caller's conversation; None for unknown ids and everybody else's."""
        if not is_id(conversation_id):
            return None
        statement = select(Conversation).where(
            _owned_by(tenant_id, user), col(Conversation.id) == conversation_id
        )
        return (await self.session.exec(statement)).one_or_none()

    def add(self, row: Conversation | ConversationItem) -> None:
        self.session.add(row)

    async def first_items(self, conversation_id: str, limit: int) -> list[Any]:
        """The first `limit` items of an (already authorised) conversation, oldest first."""
        statement = (
            select(ConversationItem.item)
            .where(col(ConversationItem.conversation_id) == conversation_id)
            .order_by(col(ConversationItem.position))
            .limit(limit)
        )
        return list((await self.session.exec(statement)).all())

    async def items_page(
        self, conversation_id: str, *, limit: int, after: int | None, newest_first: bool = False
    ) -> Page[ConversationItem]:
        """One page of an (already authorised) conversation's items, oldest first (or newest
        first: the page then starts before `after`)."""
        position = col(ConversationItem.position)
        statement = select(ConversationItem).where(
            col(ConversationItem.conversation_id) == conversation_id
        )
        if after is not None:
            statement = statement.where(position < after if newest_first else position > after)
        order = position.desc() if newest_first else position
        statement = statement.order_by(order).limit(limit + 1)
        rows = list((await self.session.exec(statement)).all())
        return Page(items=rows[:limit], has_more=len(rows) > limit)

    async def next_position(self, conversation_id: str) -> int:
        """The position the next appended item takes."""
        statement = select(func.max(ConversationItem.position)).where(
            col(ConversationItem.conversation_id) == conversation_id
        )
        last: int | None = (await self.session.exec(statement)).one()
        return 0 if last is None else last + 1

    async def delete(self, tenant_id: str, user: str | None, conversation_id: str) -> None:
        """Delete the caller's conversation and its items (the caller's unit of work commits)."""
        owned = select(Conversation.id).where(
            _owned_by(tenant_id, user), col(Conversation.id) == conversation_id
        )
        await self.session.exec(
            delete(ConversationItem).where(
                col(ConversationItem.conversation_id).in_(owned.scalar_subquery())
            )
        )
        await self.session.exec(
            delete(Conversation).where(
                _owned_by(tenant_id, user), col(Conversation.id) == conversation_id
            )
        )
