"""Every query on the `audit_events` table (admin-wide: events are not tenant-owned data)."""

from __future__ import annotations

from datetime import datetime

from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from tenants.models import AuditEvent
from tenants.pagination import Page, PageParams, fetch_page


class AuditRepository:
    """Appends and lists audit events within the caller's session."""

    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    def add(self, event: AuditEvent) -> None:
        self.session.add(event)

    async def list_page(
        self,
        page: PageParams,
        *,
        actor: str | None = None,
        action: str | None = None,
        tenant_id: str | None = None,
        since: datetime | None = None,
    ) -> Page[AuditEvent]:
        """One page of events, newest first, narrowed by the filters given."""
        statement = select(AuditEvent)
        if actor is not None:
            statement = statement.where(AuditEvent.actor == actor)
        if action is not None:
            statement = statement.where(AuditEvent.action == action)
        if tenant_id is not None:
            statement = statement.where(AuditEvent.tenant_id == tenant_id)
        if since is not None:
            statement = statement.where(col(AuditEvent.created_at) >= since)
        return await fetch_page(self.session, statement, AuditEvent.id, page, newest_first=True)
