"""API key rules: issue (plaintext returned once, stored as an HMAC), list, change the expiry
(rotation), revoke.

Usable without a request (CLI, demo seeding): every function takes the session (and the
settings where the secret is needed) and flushes its changes; the caller's unit of work
commits them together with their audit event (tenants/audit).
"""

from __future__ import annotations

from sqlalchemy.exc import IntegrityError
from sqlmodel.ext.asyncio.session import AsyncSession

from gateway.core.clock import as_utc, utcnow
from gateway.core.config import Settings
from gateway.core.errors import ConflictError, NotFoundError, ValidationFailedError
from gateway.core.ids import new_id
from tenants.api_key.keys import display_parts, generate_key, hash_key, is_well_formed
from tenants.api_key.repository import ApiKeyRepository
from tenants.api_key.schemas import KeyCreate, KeyUpdate
from tenants.models import ApiKey
from tenants.pagination import Page, PageParams
from tenants.scoping import lock_tenant, require_tenant


async def issue_key(
    session: AsyncSession,
    settings: Settings,
    tenant_id: str,
    body: KeyCreate,
    plaintext: str | None = None,
) -> tuple[ApiKey, str]:
    """Issue a key for the tenant; returns the row and the plaintext (shown only once).

    `plaintext` stores a given key instead of a random one (demo seeding); it must be well
    formed (422) and not already stored (409).
    """
    tenant = await require_tenant(session, tenant_id)
    if plaintext is None:
        plaintext = generate_key()
    elif not is_well_formed(plaintext):
        raise ValidationFailedError(
            "The key is malformed (gw_ + 32 base62 characters + checksum).",
            param="key",
            code="invalid_value",
        )
    repository = ApiKeyRepository(session)
    key_hash = hash_key(plaintext, settings.secret_key)
    if await repository.hash_exists(key_hash):
        raise ConflictError("This key is already stored.", param="key")
    prefix, last4 = display_parts(plaintext)
    key = ApiKey(
        id=new_id("key"),
        tenant_id=tenant.id,
        name=body.name,
        key_hash=key_hash,
        prefix=prefix,
        last4=last4,
        scopes=body.granted_scopes(),
        created_at=utcnow(),
        # SQLite keeps the wall-clock fields only, so every stored time is UTC.
        expires_at=as_utc(body.expires_at) if body.expires_at else None,
    )
    repository.add(key)
    try:
        await session.flush()
    except IntegrityError:
        await session.rollback()
        raise ConflictError("This key is already stored.", param="key") from None
    return key, plaintext


async def list_keys(session: AsyncSession, tenant_id: str, page: PageParams) -> Page[ApiKey]:
    """One page of the tenant's keys (404 if the tenant is unknown or deleted)."""
    tenant = await require_tenant(session, tenant_id)
    return await ApiKeyRepository(session).list_page(tenant.id, page)


async def revoke_key(session: AsyncSession, tenant_id: str, key_id: str) -> tuple[ApiKey, bool]:
    """Revoke the tenant's key: (the key, whether this call revoked it). Revoking twice keeps
    the first revocation time; concurrent revocations are serialised on the tenant, so only
    one of them revokes (and is audited)."""
    await lock_tenant(session, tenant_id)
    tenant = await require_tenant(session, tenant_id)
    key = await ApiKeyRepository(session).get(tenant.id, key_id)
    if key is None:
        raise NotFoundError(f"No API key with id '{key_id}'.", param="key_id")
    if key.revoked_at is not None:
        return key, False
    key.revoked_at = utcnow()
    session.add(key)
    await session.flush()
    return key, True


async def update_key(session: AsyncSession, tenant_id: str, key_id: str, body: KeyUpdate) -> ApiKey:
    """Set or clear the key's expiry; a revoked key cannot change (409)."""
    tenant = await require_tenant(session, tenant_id)
    key = await ApiKeyRepository(session).get(tenant.id, key_id)
    if key is None:
        raise NotFoundError(f"No API key with id '{key_id}'.", param="key_id")
    if key.revoked_at is not None:
        raise ConflictError("This key is revoked.", param="key_id")
    key.expires_at = as_utc(body.expires_at) if body.expires_at else None
    session.add(key)
    await session.flush()
    return key
