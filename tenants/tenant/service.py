"""Tenant rules: unique immutable slugs, merged limits, soft deletion that revokes keys and
the JWT config.

Usable without a request (CLI, demo seeding): every function takes the session and flushes
its changes; the caller's unit of work commits them together with their audit event
(tenants/audit).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pydantic import ValidationError
from sqlalchemy.exc import IntegrityError
from sqlmodel.ext.asyncio.session import AsyncSession

from gateway.core.clock import utcnow
from gateway.core.config import Settings, settings_error
from gateway.core.errors import ConflictError, ValidationFailedError
from gateway.core.ids import new_id
from tenants.api_key.repository import ApiKeyRepository
from tenants.jwt_config.repository import JwtConfigRepository
from tenants.models import Tenant
from tenants.pagination import Page, PageParams
from tenants.scoping import lock_tenant, require_tenant
from tenants.tenant.repository import TenantRepository
from tenants.tenant.schemas import TenantCreate, TenantLimits, TenantUpdate, tenant_limits


def _slug_taken(slug: str, *, deleted: bool = False) -> ConflictError:
    if deleted:
        return ConflictError(
            f"The slug '{slug}' belonged to a tenant that was deleted: slugs are never reused "
            "(its usage stays readable under that tenant's id). Choose another slug.",
            param="slug",
        )
    return ConflictError(f"A tenant with slug '{slug}' already exists.", param="slug")


def check_default_tenant_limits(settings: Settings) -> None:
    """`GATEWAY_DEFAULT_TENANT_LIMITS` must be valid tenant limits: a SettingsError naming the
    variable, raised where a process starts (the app) or is about to create a tenant (the CLI),
    never a 500 or an unnamed error at the first tenant."""
    try:
        TenantLimits.model_validate(settings.default_tenant_limits)
    except ValidationError as exc:
        raise settings_error(exc, "GATEWAY_DEFAULT_TENANT_LIMITS") from None


async def create_tenant(
    session: AsyncSession, body: TenantCreate, default_limits: Mapping[str, Any] | None = None
) -> Tenant:
    """Create an active tenant; a slug already used (even by a deleted tenant) is 409.

    `default_limits` (`GATEWAY_DEFAULT_TENANT_LIMITS`) fill the limit fields the body leaves
    out; a field the body sends, `null` included, is the body's; `limits: null` is every
    limit unlimited.
    """
    if body.limits is None:
        limits = TenantLimits()
    else:
        limits = TenantLimits.model_validate(
            {**(default_limits or {}), **body.limits.model_dump(mode="json", exclude_unset=True)}
        )
    repository = TenantRepository(session)
    holder = await repository.get_by_slug(body.slug)
    if holder is not None:
        raise _slug_taken(body.slug, deleted=holder.deleted_at is not None)
    now = utcnow()
    tenant = Tenant(
        id=new_id("ten"),
        slug=body.slug,
        name=body.name,
        status="active",
        limits=limits.model_dump(mode="json"),
        allowed_models=body.allowed_models,
        created_at=now,
        updated_at=now,
    )
    repository.add(tenant)
    try:
        await session.flush()
    except IntegrityError:
        # A concurrent create took the slug between the check and the insert.
        await session.rollback()
        raise _slug_taken(body.slug) from None
    return tenant


async def list_tenants(session: AsyncSession, page: PageParams) -> Page[Tenant]:
    """One page of the tenants that are not deleted."""
    return await TenantRepository(session).list_page(page)


async def update_tenant(session: AsyncSession, tenant_id: str, body: TenantUpdate) -> Tenant:
    """Apply the fields sent; `limits` replaces only the keys it names (`null`: all)."""
    tenant = await require_tenant(session, tenant_id)
    if "slug" in body.model_fields_set and body.slug != tenant.slug:
        raise ValidationFailedError("slug: slug is immutable", code="invalid_value", param="slug")
    if body.name is not None:
        tenant.name = body.name
    if body.status is not None:
        tenant.status = body.status
    if body.limits is not None:
        merged = tenant_limits(tenant).model_dump(mode="json")
        merged.update(body.limits.model_dump(mode="json", exclude_unset=True))
        tenant.limits = merged
    elif "limits" in body.model_fields_set:  # `limits: null`: every limit unlimited
        tenant.limits = TenantLimits().model_dump(mode="json")
    if "allowed_models" in body.model_fields_set:
        tenant.allowed_models = body.allowed_models
    tenant.updated_at = utcnow()
    session.add(tenant)
    await session.flush()
    return tenant


async def delete_tenant(session: AsyncSession, tenant_id: str) -> Tenant:
    """Soft-delete the tenant, revoke all its keys and drop its JWT config in one transaction.
    Concurrent deletes are serialised on the tenant: one succeeds, the others find it gone
    (404), so the audit log has one `tenant.delete`."""
    await lock_tenant(session, tenant_id)
    tenant = await require_tenant(session, tenant_id)
    now = utcnow()
    tenant.deleted_at = now
    tenant.updated_at = now
    session.add(tenant)
    await ApiKeyRepository(session).revoke_all(tenant.id, now)
    await JwtConfigRepository(session).delete(tenant.id)
    await session.flush()
    return tenant
