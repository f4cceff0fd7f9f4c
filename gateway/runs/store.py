"""Every query on the `stored_runs` table (paused runs and what became of them).

Reads go through `_owned_by(tenant_id, user)`: the tenant always, and the end user too when
the caller is one, so another tenant's or another end user's run is simply not found (404).
`claim` is the one transition out of `requires_action`: a conditional UPDATE, so of two
resumes racing on any replicas exactly one gets the row and the other sees 409.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement
from sqlmodel import and_, col, func, select, update
from sqlmodel.ext.asyncio.session import AsyncSession

from tenants.models import StoredRun
from tenants.models.stored_run import WAITING

RESUMING = "resuming"


def _owned_by(tenant_id: str, user: str | None) -> ColumnElement[bool]:
    owned = col(StoredRun.tenant_id) == tenant_id
    if user is not None:
        return and_(owned, col(StoredRun.user) == user)
    return owned


class StoredRunRepository:
    """Reads and writes stored runs within the caller's unit of work (which commits)."""

    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def get(self, tenant_id: str, user: str | None, run_id: str) -> StoredRun | None:
        statement = select(StoredRun).where(_owned_by(tenant_id, user), col(StoredRun.id) == run_id)
        return (await self.session.exec(statement)).one_or_none()

    async def claim(self, tenant_id: str, user: str | None, run_id: str, now: datetime) -> bool:
        """Move a waiting, unexpired run to `resuming`; False when another resume (or the
        expiry) came first."""
        statement: Any = (
            update(StoredRun)
            .where(
                _owned_by(tenant_id, user),
                col(StoredRun.id) == run_id,
                col(StoredRun.status) == WAITING,
                col(StoredRun.expires_at) > now,
            )
            .values(status=RESUMING, updated_at=now)
            .execution_options(synchronize_session=False)
        )
        result = await self.session.exec(statement)
        return bool(result.rowcount == 1)

    async def conversation_waiting(self, conversation_id: str, now: datetime) -> bool:
        """True while a paused (or resuming) run holds the conversation's next turn."""
        statement = select(StoredRun.id).where(
            col(StoredRun.conversation_id) == conversation_id,
            col(StoredRun.status).in_([WAITING, RESUMING]),
            col(StoredRun.expires_at) > now,
        )
        return (await self.session.exec(statement.limit(1))).first() is not None

    async def count_waiting(self, now: datetime) -> int:
        """Runs waiting for decisions, deployment-wide (the gauge)."""
        statement = select(func.count()).where(
            col(StoredRun.status) == WAITING, col(StoredRun.expires_at) > now
        )
        return int((await self.session.exec(statement)).one())

    def add(self, row: StoredRun) -> None:
        self.session.add(row)
