"""Every query on the `tool_secrets` table (one row per tenant, keyed by tenant id)."""

from __future__ import annotations

from sqlmodel import select
from sqlmodel.ext.asyncio.session import AsyncSession

from tenants.models import ToolSecret
from tenants.pagination import is_id


class ToolSecretRepository:
    """Reads and writes tool-signing secrets within the caller's session."""

    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def get(self, tenant_id: str) -> ToolSecret | None:
        """The tenant's secret row, if any."""
        if not is_id(tenant_id):
            return None
        statement = select(ToolSecret).where(ToolSecret.tenant_id == tenant_id)
        return (await self.session.exec(statement)).one_or_none()

    def add(self, row: ToolSecret) -> None:
        self.session.add(row)
