"""Every query on the `api_keys` table.

Admin reads and writes go through `_scoped(tenant_id)`, so a key id of another tenant is simply
not found. Two look-ups are deliberately not tenant-scoped because they are how the data plane
learns the tenant: `get_with_tenant_by_hash` (authentication), and `touch_last_used` and
`rehash` (called with the id of the key that just authenticated).
"""

from __future__ import annotations

from datetime import datetime

from sqlmodel import col, select, update
from sqlmodel.ext.asyncio.session import AsyncSession
from sqlmodel.sql.expression import SelectOfScalar

from tenants.models import ApiKey, Tenant
from tenants.pagination import Page, PageParams, fetch_page, is_id


class ApiKeyRepository:
    """Reads and writes API keys within the caller's session."""

    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    @staticmethod
    def _scoped(tenant_id: str) -> SelectOfScalar[ApiKey]:
        """The one place admin key queries get their tenant filter."""
        return select(ApiKey).where(ApiKey.tenant_id == tenant_id)

    async def get(self, tenant_id: str, key_id: str) -> ApiKey | None:
        """The tenant's key with this id; None for unknown ids and other tenants' keys."""
        if not is_id(key_id):
            return None
        statement = self._scoped(tenant_id).where(ApiKey.id == key_id)
        return (await self.session.exec(statement)).one_or_none()

    async def list_page(self, tenant_id: str, page: PageParams) -> Page[ApiKey]:
        """One page of the tenant's keys (revoked ones included), oldest first."""
        return await fetch_page(self.session, self._scoped(tenant_id), ApiKey.id, page)

    def add(self, key: ApiKey) -> None:
        self.session.add(key)

    async def revoke_all(self, tenant_id: str, when: datetime) -> None:
        """Revoke every key of the tenant not revoked yet (the caller's unit of work commits)."""
        statement = (
            update(ApiKey)
            .where(col(ApiKey.tenant_id) == tenant_id, col(ApiKey.revoked_at).is_(None))
            .values(revoked_at=when)
            .execution_options(synchronize_session=False)
        )
        await self.session.exec(statement)

    async def hash_exists(self, key_hash: str) -> bool:
        """Whether any tenant holds this hash (hashes are globally unique; answers a bool only)."""
        statement = select(ApiKey.id).where(ApiKey.key_hash == key_hash)
        return (await self.session.exec(statement)).first() is not None

    async def get_with_tenant_by_hash(self, key_hash: str) -> tuple[ApiKey, Tenant] | None:
        """Authentication look-up: the key and its tenant, whatever their status."""
        statement = (
            select(ApiKey, Tenant)
            .join(Tenant, col(Tenant.id) == col(ApiKey.tenant_id))
            .where(ApiKey.key_hash == key_hash)
        )
        row = (await self.session.exec(statement)).one_or_none()
        return None if row is None else (row[0], row[1])

    async def rehash(self, key_id: str, key_hash: str) -> None:
        """Store the key's HMAC under the current secret key (rotation)."""
        statement = (
            update(ApiKey)
            .where(col(ApiKey.id) == key_id)
            .values(key_hash=key_hash)
            .execution_options(synchronize_session=False)
        )
        await self.session.exec(statement)

    async def touch_last_used(self, key_id: str, when: datetime) -> None:
        """Record a use of the key; never moves `last_used_at` backwards."""
        statement = (
            update(ApiKey)
            .where(
                col(ApiKey.id) == key_id,
                col(ApiKey.last_used_at).is_(None) | (col(ApiKey.last_used_at) < when),
            )
            .values(last_used_at=when)
            .execution_options(synchronize_session=False)
        )
        await self.session.exec(statement)
