"""Every query on the `usage_dead_letters` table (admin-only data: no tenant scoping)."""

from __future__ import annotations

from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from tenants.models import UsageDeadLetter


class DeadLetterRepository:
    """Quarantines usage records the database refused, and lists them."""

    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def add(self, letter: UsageDeadLetter) -> None:
        """Store one dead letter (flushed; the caller's unit of work commits it)."""
        self.session.add(letter)
        await self.session.flush()

    async def latest(self, limit: int = 100) -> list[UsageDeadLetter]:
        """The most recent dead letters, newest first."""
        statement = select(UsageDeadLetter).order_by(col(UsageDeadLetter.id).desc()).limit(limit)
        return list((await self.session.exec(statement)).all())
