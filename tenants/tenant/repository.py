"""Every query on the `tenants` table.

A tenant row is the tenant itself, so there is no tenant scoping here; deleted tenants are
hidden unless a caller asks for them explicitly (usage reports stay readable after deletion).
"""

from __future__ import annotations

from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from tenants.models import Tenant
from tenants.pagination import Page, PageParams, fetch_page
from tenants.scoping import find_tenant


class TenantRepository:
    """Reads and writes tenants within the caller's unit of work (which commits)."""

    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def get(self, tenant_id: str, *, include_deleted: bool = False) -> Tenant | None:
        """The tenant with this id; None if unknown (or deleted, unless included)."""
        return await find_tenant(self.session, tenant_id, include_deleted=include_deleted)

    async def get_by_slug(self, slug: str) -> Tenant | None:
        """The tenant holding this slug, deleted or not (slugs are never reused)."""
        return (await self.session.exec(select(Tenant).where(Tenant.slug == slug))).one_or_none()

    async def list_page(self, page: PageParams) -> Page[Tenant]:
        """One page of the tenants that are not deleted, oldest first."""
        statement = select(Tenant).where(col(Tenant.deleted_at).is_(None))
        return await fetch_page(self.session, statement, Tenant.id, page)

    def add(self, tenant: Tenant) -> None:
        self.session.add(tenant)
