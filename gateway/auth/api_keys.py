"""Resolve an API key to a Principal: checksum (no I/O), cache, then the database."""

from __future__ import annotations

import logging

from gateway.auth.cache import PrincipalCache
from gateway.auth.principal import ALL_SCOPES, Principal
from gateway.core.clock import as_utc, utcnow
from gateway.core.db import Database
from gateway.core.errors import AuthenticationFailedError
from tenants.api_key.keys import hash_key, is_well_formed
from tenants.api_key.repository import ApiKeyRepository

logger = logging.getLogger("gateway.auth")


async def resolve_api_key(
    key: str, *, secret_key: str, cache: PrincipalCache, db: Database
) -> Principal:
    """The principal of a valid, unrevoked, unexpired key of a live tenant; else 401."""
    if not is_well_formed(key):
        raise AuthenticationFailedError()
    key_hash = hash_key(key, secret_key)
    principal = await cache.get_or_load(key_hash, lambda: _load(key_hash, db))
    if principal.expires_at is not None and principal.expires_at <= utcnow():
        raise AuthenticationFailedError()
    return principal


async def _load(key_hash: str, db: Database) -> Principal:
    async with db.session() as session:
        found = await ApiKeyRepository(session).get_with_tenant_by_hash(key_hash)
    if found is None:
        raise AuthenticationFailedError()
    api_key, tenant = found
    if api_key.revoked_at is not None or tenant.deleted_at is not None:
        raise AuthenticationFailedError()
    return Principal(
        tenant_id=tenant.id,
        tenant_slug=tenant.slug,
        tenant_status=tenant.status,
        key_id=api_key.id,
        scopes=frozenset(api_key.scopes) if api_key.scopes is not None else ALL_SCOPES,
        limits=tenant.limits,
        expires_at=as_utc(api_key.expires_at) if api_key.expires_at else None,
    )
