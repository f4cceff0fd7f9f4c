"""Every query on the `jwt_configs` table.

Admin reads and writes are by tenant id (the primary key). `get_with_tenant_by_issuer` is the
data plane's look-up: the issuer of a token is how the gateway learns its tenant.
"""

from __future__ import annotations

from sqlmodel import col, delete, select
from sqlmodel.ext.asyncio.session import AsyncSession

from tenants.models import JwtConfig, Tenant
from tenants.pagination import is_id


class JwtConfigRepository:
    """Reads and writes JWT configs within the caller's session."""

    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def get(self, tenant_id: str) -> JwtConfig | None:
        """The tenant's config, if any."""
        if not is_id(tenant_id):
            return None
        statement = select(JwtConfig).where(JwtConfig.tenant_id == tenant_id)
        return (await self.session.exec(statement)).one_or_none()

    async def issuer_owner(self, issuer: str) -> str | None:
        """The id of the tenant whose config uses this issuer, if any."""
        statement = select(JwtConfig.tenant_id).where(JwtConfig.issuer == issuer)
        return (await self.session.exec(statement)).first()

    def add(self, config: JwtConfig) -> None:
        self.session.add(config)

    async def delete(self, tenant_id: str) -> None:
        """Remove the tenant's config (the caller's unit of work commits)."""
        statement = delete(JwtConfig).where(col(JwtConfig.tenant_id) == tenant_id)
        await self.session.exec(statement)

    async def get_with_tenant_by_issuer(self, issuer: str) -> tuple[JwtConfig, Tenant] | None:
        """Authentication look-up: the config and its tenant, whatever the tenant's status."""
        statement = (
            select(JwtConfig, Tenant)
            .join(Tenant, col(Tenant.id) == col(JwtConfig.tenant_id))
            .where(JwtConfig.issuer == issuer)
        )
        row = (await self.session.exec(statement)).one_or_none()
        return None if row is None else (row[0], row[1])
