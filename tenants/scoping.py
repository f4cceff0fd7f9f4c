"""Tenant scoping shared by every control-plane domain: the owning tenant, or a 404.

A resource under `/admin/tenants/{tenant_id}/...` exists only while its tenant does, so each
service starts with `require_tenant`; a deleted or unknown tenant (or a malformed id) answers
the same 404. Kept below the domains so that none of them imports another for it.
"""

from __future__ import annotations

from sqlmodel import col, select, update
from sqlmodel.ext.asyncio.session import AsyncSession

from gateway.core.errors import NotFoundError
from tenants.models import Tenant
from tenants.pagination import is_id


async def find_tenant(
    session: AsyncSession, tenant_id: str, *, include_deleted: bool = False
) -> Tenant | None:
    """The tenant with this id; None if unknown (or deleted, unless included)."""
    if not is_id(tenant_id):
        return None
    statement = select(Tenant).where(Tenant.id == tenant_id)
    if not include_deleted:
        statement = statement.where(col(Tenant.deleted_at).is_(None))
    return (await session.exec(statement)).one_or_none()


async def require_tenant(
    session: AsyncSession, tenant_id: str, *, include_deleted: bool = False
) -> Tenant:
    """The tenant, or 404 (a deleted tenant is 404 unless `include_deleted`)."""
    tenant = await find_tenant(session, tenant_id, include_deleted=include_deleted)
    if tenant is None:
        raise NotFoundError(f"No tenant with id '{tenant_id}'.", param="tenant_id")
    return tenant


async def lock_tenant(session: AsyncSession, tenant_id: str) -> None:
    """Serialise this unit of work with the tenant's other changes that check references (an
    agent PUT naming a handoff target or an upstream, against the DELETE of that target or
    upstream): each takes this lock before its checks, so one of them sees the other's
    outcome. Held until the unit commits: PostgreSQL locks the tenant row (`FOR NO KEY
    UPDATE`: runs inserting rows that reference the tenant are not held up); SQLite takes its
    database write lock with a no-op write (waiting up to its busy timeout)."""
    if not is_id(tenant_id):
        return
    connection = await session.connection()
    if connection.dialect.name == "postgresql":
        statement = select(Tenant.id).where(Tenant.id == tenant_id).with_for_update(key_share=True)
        await session.exec(statement)
    else:
        await session.exec(
            update(Tenant).where(col(Tenant.id) == tenant_id).values(slug=Tenant.slug)
        )
