"""Every query on the `agents` and `agent_versions` tables.

Each statement carries `_owned_by(tenant_id)`, the one tenant filter; versions are reached
through a join on their agent, so they are scoped by the same predicate. The data-plane reads
(`get_active`, `list_active`) also skip agents of deleted tenants.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement
from sqlmodel import and_, col, delete, select, update
from sqlmodel.ext.asyncio.session import AsyncSession
from sqlmodel.sql.expression import Select

from tenants.models import Agent, AgentVersion, Tenant
from tenants.pagination import Page, PageParams, fetch_page


def _owned_by(tenant_id: str) -> ColumnElement[bool]:
    """The tenant filter every agent query goes through."""
    return col(Agent.tenant_id) == tenant_id


def _active_versions(tenant_id: str) -> Select[Agent, AgentVersion]:
    """Agents of a live tenant joined with their active version."""
    active = and_(
        col(AgentVersion.agent_id) == col(Agent.id),
        col(AgentVersion.version) == col(Agent.active_version),
    )
    return (
        select(Agent, AgentVersion)
        .join(AgentVersion, active)
        .join(Tenant, col(Tenant.id) == col(Agent.tenant_id))
        .where(_owned_by(tenant_id), col(Tenant.deleted_at).is_(None))
    )


class AgentRepository:
    """Reads and writes agents within the caller's unit of work (which commits)."""

    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def get(self, tenant_id: str, name: str) -> Agent | None:
        """The tenant's agent with this name."""
        statement = select(Agent).where(_owned_by(tenant_id), col(Agent.name) == name)
        return (await self.session.exec(statement)).one_or_none()

    async def existing_names(self, tenant_id: str, names: list[str]) -> set[str]:
        """Which of these names are agents of the tenant."""
        if not names:
            return set()
        statement = select(Agent.name).where(_owned_by(tenant_id), col(Agent.name).in_(names))
        return set((await self.session.exec(statement)).all())

    async def list_page(self, tenant_id: str, page: PageParams) -> Page[Agent]:
        """One page of the tenant's agents, oldest first."""
        statement = select(Agent).where(_owned_by(tenant_id))
        return await fetch_page(self.session, statement, Agent.id, page)

    async def get_version(self, tenant_id: str, agent_id: str, version: int) -> AgentVersion | None:
        """Version `version` of the tenant's agent `agent_id`."""
        statement = (
            select(AgentVersion)
            .join(Agent, col(Agent.id) == col(AgentVersion.agent_id))
            .where(
                _owned_by(tenant_id),
                col(Agent.id) == agent_id,
                col(AgentVersion.version) == version,
            )
        )
        return (await self.session.exec(statement)).one_or_none()

    async def active_versions(self, tenant_id: str, agents: list[Agent]) -> dict[str, AgentVersion]:
        """The active version of each of these agents of the tenant, by agent id."""
        if not agents:
            return {}
        statement = _active_versions(tenant_id).where(col(Agent.id).in_([a.id for a in agents]))
        return {agent.id: version for agent, version in (await self.session.exec(statement)).all()}

    async def list_versions(
        self, tenant_id: str, agent_id: str, *, limit: int, before: int | None
    ) -> Page[AgentVersion]:
        """Versions of the tenant's agent, newest first, below `before` when given."""
        statement = (
            select(AgentVersion)
            .join(Agent, col(Agent.id) == col(AgentVersion.agent_id))
            .where(_owned_by(tenant_id), col(Agent.id) == agent_id)
        )
        if before is not None:
            statement = statement.where(col(AgentVersion.version) < before)
        statement = statement.order_by(col(AgentVersion.version).desc()).limit(limit + 1)
        rows = list((await self.session.exec(statement)).all())
        return Page(items=rows[:limit], has_more=len(rows) > limit)

    async def bump_version(self, tenant_id: str, name: str, when: datetime) -> Agent | None:
        """Atomically take the next version number of an existing agent and make it active.

        One UPDATE ... RETURNING: concurrent PUTs serialise on the row and each gets its own
        number. None when the tenant has no such agent.
        """
        statement: Any = (
            update(Agent)
            .where(_owned_by(tenant_id), col(Agent.name) == name)
            .values(
                latest_version=col(Agent.latest_version) + 1,
                active_version=col(Agent.latest_version) + 1,
                updated_at=when,
            )
            .returning(Agent)
            .execution_options(synchronize_session=False, populate_existing=True)
        )
        agent: Agent | None = (await self.session.exec(statement)).scalars().one_or_none()
        return agent

    def add(self, row: Agent | AgentVersion) -> None:
        self.session.add(row)

    async def delete(self, tenant_id: str, agent_id: str) -> None:
        """Delete the tenant's agent and all its versions (the caller's unit of work commits)."""
        owned = select(Agent.id).where(_owned_by(tenant_id), col(Agent.id) == agent_id)
        await self.session.exec(
            delete(AgentVersion).where(col(AgentVersion.agent_id).in_(owned.scalar_subquery()))
        )
        await self.session.exec(
            delete(Agent).where(_owned_by(tenant_id), col(Agent.id) == agent_id)
        )

    async def get_active(self, tenant_id: str, name: str) -> tuple[Agent, AgentVersion] | None:
        """Data plane: the tenant's runnable agent and its active version."""
        statement = _active_versions(tenant_id).where(col(Agent.name) == name)
        row = (await self.session.exec(statement)).one_or_none()
        return None if row is None else (row[0], row[1])

    async def get_active_with_models(
        self, tenant_id: str, name: str
    ) -> tuple[AgentVersion, list[str] | None] | None:
        """Data plane: the active version of the tenant's agent and the tenant's
        `allowed_models`, in one query."""
        statement = (
            select(AgentVersion, Tenant.allowed_models)
            .join(Agent, col(AgentVersion.agent_id) == col(Agent.id))
            .join(Tenant, col(Tenant.id) == col(Agent.tenant_id))
            .where(
                _owned_by(tenant_id),
                col(Agent.name) == name,
                col(AgentVersion.version) == col(Agent.active_version),
                col(Tenant.deleted_at).is_(None),
            )
        )
        row = (await self.session.exec(statement)).one_or_none()
        return None if row is None else (row[0], None if row[1] is None else list(row[1]))

    async def list_active(self, tenant_id: str) -> list[tuple[Agent, AgentVersion]]:
        """Data plane: every runnable agent of the tenant with its active version, by name."""
        statement = _active_versions(tenant_id).order_by(col(Agent.name))
        return [(agent, version) for agent, version in (await self.session.exec(statement)).all()]

    async def active_named(
        self, tenant_id: str, names: list[str]
    ) -> list[tuple[Agent, AgentVersion]]:
        """The tenant's agents among `names` with their active versions."""
        if not names:
            return []
        statement = _active_versions(tenant_id).where(col(Agent.name).in_(names))
        return [(agent, version) for agent, version in (await self.session.exec(statement)).all()]

    async def list_active_page(
        self, tenant_id: str, page: PageParams
    ) -> Page[tuple[Agent, AgentVersion]]:
        """One page of `list_active`; `page.after` is the last name already seen."""
        statement = _active_versions(tenant_id).order_by(col(Agent.name))
        if page.after is not None:
            statement = statement.where(col(Agent.name) > page.after)
        rows = list((await self.session.exec(statement.limit(page.limit + 1))).all())
        return Page(
            items=[(agent, version) for agent, version in rows[: page.limit]],
            has_more=len(rows) > page.limit,
        )
