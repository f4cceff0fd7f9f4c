"""Tenant upstream rules: the URL passes the egress guard, the key is stored encrypted (its
last 4 characters kept for display), every PUT bumps the version (the data plane caches one
client per version), and an upstream that an agent's active version uses cannot be deleted.

Every function flushes its changes; the caller's unit of work commits them together with
their audit event.
"""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy.exc import IntegrityError
from sqlmodel.ext.asyncio.session import AsyncSession

from gateway.core.clock import utcnow
from gateway.core.egress import EgressPolicy, EgressRefusedError
from gateway.core.errors import ConflictError, NotFoundError, ValidationFailedError
from gateway.core.ids import new_id
from tenants.models import TenantUpstream
from tenants.pagination import Page, PageParams
from tenants.scoping import lock_tenant, require_tenant
from tenants.secretbox import seal, unseal
from tenants.upstream.repository import UpstreamRepository
from tenants.upstream.schemas import UpstreamPut

PURPOSE = "tenant-upstream-key-v1"
SHOWN_FROM = 16
"""A key shorter than this is shown as `…` alone (a 4-character key was shown whole)."""


def _missing(name: str) -> NotFoundError:
    return NotFoundError(f"No upstream named '{name}'.", param="name")


async def put_upstream(
    session: AsyncSession,
    secret_key: str,
    policy: EgressPolicy,
    tenant_id: str,
    name: str,
    body: UpstreamPut,
) -> tuple[TenantUpstream, bool]:
    """Create or replace the tenant's upstream `name`; returns it and whether it is new."""
    try:
        policy.check_url(body.base_url)
    except EgressRefusedError as exc:
        raise ValidationFailedError(
            f"base_url: {exc}", param="base_url", code="url_not_allowed"
        ) from None
    owner = (await require_tenant(session, tenant_id)).id
    # Concurrent PUTs of one upstream take turns: each bumps the version the last one left
    # (two writes sharing a version would leave replicas on the loser's cached client).
    await lock_tenant(session, owner)
    repository = UpstreamRepository(session)
    now = utcnow()
    row = await repository.get(owner, name)
    created = row is None
    if row is None:
        row = TenantUpstream(
            id=new_id("ups"),
            tenant_id=owner,
            name=name,
            base_url="",
            api="",
            api_key_encrypted="",
            key_last4="",
            version=0,
            created_at=now,
        )
    row.base_url = body.base_url
    row.api = body.api
    row.api_key_encrypted = seal(body.api_key, secret_key, PURPOSE)
    # The last 4 characters identify a key among others, unless they are much of it.
    row.key_last4 = body.api_key[-4:] if len(body.api_key) >= SHOWN_FROM else ""
    row.version += 1
    row.updated_at = now
    repository.add(row)
    try:
        await session.flush()
    except IntegrityError:
        await session.rollback()
        raise ConflictError(
            f"Upstream '{name}' is being created concurrently; retry.", param="name"
        ) from None
    return row, created


async def get_upstream(session: AsyncSession, tenant_id: str, name: str) -> TenantUpstream:
    tenant = await require_tenant(session, tenant_id)
    row = await UpstreamRepository(session).get(tenant.id, name)
    if row is None:
        raise _missing(name)
    return row


async def list_upstreams(
    session: AsyncSession, tenant_id: str, page: PageParams
) -> Page[TenantUpstream]:
    tenant = await require_tenant(session, tenant_id)
    return await UpstreamRepository(session).list_page(tenant.id, page)


async def delete_upstream(session: AsyncSession, tenant_id: str, name: str) -> None:
    """Delete the upstream; 409 while an agent's active version runs on it."""
    row = await get_upstream(session, tenant_id, name)
    await lock_tenant(session, row.tenant_id)  # no agent PUT naming it lands meanwhile
    repository = UpstreamRepository(session)
    users = await repository.agents_using(row.tenant_id, name)
    if users:
        raise ConflictError(
            f"Upstream '{name}' is used by agent(s) {', '.join(users)}; change them first.",
            param="name",
            code="upstream_in_use",
        )
    await repository.delete(row.tenant_id, name)
    await session.flush()


async def require_upstream(session: AsyncSession, tenant_id: str, name: str) -> None:
    """422 unless the tenant has an upstream `name` (an agent spec naming it is checked)."""
    if await UpstreamRepository(session).get(tenant_id, name) is None:
        raise ValidationFailedError(
            f"upstream: the tenant has no upstream named '{name}'.",
            param="upstream",
            code="upstream_not_found",
        )


def api_key_of(row: TenantUpstream, secret_key: str | Sequence[str]) -> str:
    """The upstream's key in clear (data plane only, never logged)."""
    return unseal(row.api_key_encrypted, secret_key, PURPOSE)
