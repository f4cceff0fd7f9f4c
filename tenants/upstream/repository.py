"""Every query on the `tenant_upstreams` table, each scoped by `_owned_by(tenant_id)`."""

from __future__ import annotations

from sqlalchemy import ColumnElement
from sqlmodel import col, delete, select
from sqlmodel.ext.asyncio.session import AsyncSession

from tenants.models import Agent, AgentVersion, TenantUpstream
from tenants.pagination import Page, PageParams, fetch_page


def _owned_by(tenant_id: str) -> ColumnElement[bool]:
    """The tenant filter every upstream query goes through."""
    return col(TenantUpstream.tenant_id) == tenant_id


class UpstreamRepository:
    """Reads and writes tenant upstreams within the caller's unit of work (which commits)."""

    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def get(self, tenant_id: str, name: str) -> TenantUpstream | None:
        statement = select(TenantUpstream).where(
            _owned_by(tenant_id), col(TenantUpstream.name) == name
        )
        return (await self.session.exec(statement)).one_or_none()

    async def list_page(self, tenant_id: str, page: PageParams) -> Page[TenantUpstream]:
        statement = select(TenantUpstream).where(_owned_by(tenant_id))
        return await fetch_page(self.session, statement, TenantUpstream.id, page)

    def add(self, row: TenantUpstream) -> None:
        self.session.add(row)

    async def delete(self, tenant_id: str, name: str) -> None:
        await self.session.exec(
            delete(TenantUpstream).where(_owned_by(tenant_id), col(TenantUpstream.name) == name)
        )

    async def agents_using(self, tenant_id: str, name: str) -> list[str]:
        """Names of the tenant's agents whose active version runs on this upstream."""
        statement = (
            select(Agent.name, AgentVersion.spec)
            .join(AgentVersion, col(AgentVersion.agent_id) == col(Agent.id))
            .where(
                col(Agent.tenant_id) == tenant_id,
                col(AgentVersion.version) == col(Agent.active_version),
            )
            .order_by(col(Agent.name))
        )
        rows = (await self.session.exec(statement)).all()
        return [agent for agent, spec in rows if (spec or {}).get("upstream") == name]
