"""Conversation rules: create, read, list items, delete, and one run's turn.

A turn (`ConversationTurns.begin`) checks the conversation is the caller's (404 otherwise),
takes its lock (409 `conversation_busy` when another turn holds it), and loads its items as
the history the run's input is prefixed with. When the run completes, `Turn.append` stores the
new input and the run's new items in one transaction; a failed or cancelled run appends
nothing. The lock is released on every outcome by whoever ends the run (the endpoint).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from agents.result import RunResultBase
from sqlalchemy.exc import IntegrityError
from sqlmodel.ext.asyncio.session import AsyncSession

from gateway.auth.principal import Principal
from gateway.conversations.lock import ConversationLocks, HeldLock
from gateway.conversations.repository import ConversationRepository
from gateway.core.clock import utcnow
from gateway.core.db import Database
from gateway.core.errors import (
    ConflictError,
    InvalidRequestError,
    NotFoundError,
    PermissionDeniedError,
)
from gateway.core.ids import new_id
from tenants.models import Conversation, ConversationItem
from tenants.pagination import Page

APPEND_ATTEMPTS = 3
"""Tries of a turn's append when concurrent turns (a lapsed lock) took its positions."""


def not_found() -> NotFoundError:
    return NotFoundError("No such conversation.", code="conversation_not_found")


async def create_conversation(
    session: AsyncSession, principal: Principal, metadata: dict[str, Any] | None
) -> Conversation:
    """A new, empty conversation of the caller (flushed; the caller's unit of work commits)."""
    now = utcnow()
    row = Conversation(
        id=new_id("conv"),
        tenant_id=principal.tenant_id,
        user=principal.user,
        meta=metadata or {},
        created_at=now,
        updated_at=now,
    )
    ConversationRepository(session).add(row)
    await session.flush()
    return row


MAX_CONVERSATION_ID = 64


async def require_conversation(
    session: AsyncSession, principal: Principal, conversation_id: str
) -> Conversation:
    """The caller's conversation, or 404 (also for another tenant's or end user's, and for an
    id longer than any conversation's, without a look-up)."""
    if len(conversation_id) > MAX_CONVERSATION_ID:
        raise not_found()
    row = await ConversationRepository(session).get(
        principal.tenant_id, principal.user, conversation_id
    )
    if row is None:
        raise not_found()
    return row


async def list_items(
    session: AsyncSession,
    principal: Principal,
    conversation_id: str,
    *,
    limit: int,
    after: int | None,
    newest_first: bool = False,
) -> Page[ConversationItem]:
    """One page of the caller's conversation's items, oldest first (or newest first)."""
    row = await require_conversation(session, principal, conversation_id)
    return await ConversationRepository(session).items_page(
        row.id, limit=limit, after=after, newest_first=newest_first
    )


async def delete_conversation(
    session: AsyncSession, principal: Principal, conversation_id: str
) -> None:
    """Delete the caller's conversation and its items (flushed; the caller's unit commits)."""
    row = await require_conversation(session, principal, conversation_id)
    await ConversationRepository(session).delete(principal.tenant_id, principal.user, row.id)
    await session.flush()


def as_items(sdk_input: str | list[Any]) -> list[Any]:
    """A run's input as a list of SDK input items."""
    if isinstance(sdk_input, str):
        return [{"role": "user", "content": sdk_input}]
    return list(sdk_input)


@dataclass
class Turn:
    """One run's turn on a conversation: its history, its lock, where it appends."""

    conversation_id: str
    history: list[Any]
    lock: HeldLock
    db: Database

    def input_with(self, sdk_input: str | list[Any]) -> list[Any]:
        """The run's SDK input: the stored history, then the new input."""
        return [*self.history, *as_items(sdk_input)]

    def new_items(self, result: RunResultBase, *, skip: int | None = None) -> list[Any]:
        """The turn's input and the run's new items, as `append` stores them."""
        # A resumed turn's result starts with the history its paused turn had (`skip` items).
        items: list[Any] = result.to_input_list()[len(self.history) if skip is None else skip :]
        return items

    async def append(self, items: list[Any]) -> None:
        """Store the turn's items (`new_items`, maybe filtered) in one transaction.

        The lock makes turns exclusive, but a lock can lapse (Redis down in `open` mode across
        replicas): if another turn took the same positions meanwhile, the unique index
        refuses the insert and the append runs again after it, so nothing is lost."""
        for attempt in range(APPEND_ATTEMPTS):
            try:
                await self._append(items)
                return
            except IntegrityError:
                if attempt == APPEND_ATTEMPTS - 1:
                    raise

    async def _append(self, items: list[Any]) -> None:
        now = utcnow()
        async with self.db.unit() as session:
            repository = ConversationRepository(session)
            conversation = await session.get(Conversation, self.conversation_id)
            if conversation is None:
                return  # deleted while the run was in flight: nothing to continue
            first = await repository.next_position(self.conversation_id)
            for offset, item in enumerate(items):
                repository.add(
                    ConversationItem(
                        conversation_id=self.conversation_id,
                        position=first + offset,
                        item=item,
                        created_at=now,
                    )
                )
            conversation.updated_at = now
            session.add(conversation)

    def release(self) -> Awaitable[None]:
        """Free the conversation for its next turn (completes even if the caller is
        cancelled)."""
        return self.lock.release()


class ConversationTurns:
    """Begins turns: ownership check, lock, history; one per app."""

    def __init__(
        self,
        db: Database,
        locks: ConversationLocks,
        *,
        max_items: int,
        waiting: Callable[[str], Awaitable[bool]] | None = None,
    ) -> None:
        self.waiting = waiting
        """Whether a paused run holds the conversation (its turn is not over yet)."""
        self.db = db
        self.locks = locks
        self.max_items = max_items

    async def begin(self, principal: Principal, conversation_id: str, incoming: int = 1) -> Turn:
        """The caller's turn on the conversation: 403 without the `conversations` scope (a
        run would otherwise read the conversation through the model), 404 if not theirs, 409
        if busy, 400 `conversation_too_long` when its items and the turn's `incoming` input
        items would be more than `max_items` (the turn's answer may add a few more)."""
        if "conversations" not in principal.scopes:
            raise PermissionDeniedError(
                "This credential lacks the 'conversations' scope.", code="missing_scope"
            )
        async with self.db.session() as session:
            await require_conversation(session, principal, conversation_id)
        lock = await self.locks.acquire(conversation_id)
        try:
            # Read under the lock: the previous turn's items are committed by now.
            async with self.db.session() as session:
                history = await ConversationRepository(session).first_items(
                    conversation_id, self.max_items
                )
            if self.waiting is not None and await self.waiting(conversation_id):
                raise ConflictError(
                    "A run on this conversation is waiting for approval: resume it first.",
                    code="conversation_busy",
                    param="conversation_id",
                )
            if len(history) + incoming > self.max_items:
                held = len(history)
                if held == self.max_items:  # read up to the limit: it may hold more (a turn's
                    # answer is stored whole)
                    async with self.db.session() as session:
                        held = await ConversationRepository(session).next_position(conversation_id)
                raise InvalidRequestError(
                    f"This conversation is full: it holds {held} items, this turn adds "
                    f"{incoming} and the limit is {self.max_items}; start a new one.",
                    code="conversation_too_long",
                    param="conversation_id",
                )
        except BaseException:
            await lock.release()
            raise
        return Turn(conversation_id=conversation_id, history=history, lock=lock, db=self.db)

    async def delete(self, principal: Principal, conversation_id: str) -> None:
        """Delete the caller's conversation: 404 if not theirs, 409 `conversation_busy` while
        a turn runs on it or a run of it waits for approval (that run would answer with, or
        append to, a conversation that is gone)."""
        async with self.db.session() as session:
            await require_conversation(session, principal, conversation_id)
        lock = await self.locks.acquire(conversation_id)
        try:
            if self.waiting is not None and await self.waiting(conversation_id):
                raise ConflictError(
                    "A run on this conversation is waiting for approval: resume it first.",
                    code="conversation_busy",
                    param="conversation_id",
                )
            async with self.db.unit() as session:
                await delete_conversation(session, principal, conversation_id)
        finally:
            await lock.release()

    async def resume(self, conversation_id: str) -> Turn:
        """The turn of a resumed run: the lock only (its paused turn already checked the
        caller and read the history; the append skips the items it had)."""
        lock = await self.locks.acquire(conversation_id)
        return Turn(conversation_id=conversation_id, history=[], lock=lock, db=self.db)
