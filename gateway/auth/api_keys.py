"""Resolve an API key to a Principal: checksum (no I/O), cache, then the database."""

from __future__ import annotations

import asyncio
import logging
from datetime import timedelta

from gateway.auth.cache import PrincipalCache
from gateway.auth.principal import ALL_SCOPES, Principal
from gateway.core.clock import as_utc, utcnow
from gateway.core.db import Database
from gateway.core.errors import AuthenticationFailedError
from tenants.api_key.keys import hash_key, is_well_formed
from tenants.api_key.repository import ApiKeyRepository

logger = logging.getLogger("gateway.auth")
LAST_USED_RESOLUTION = timedelta(minutes=1)
_background: set[asyncio.Task[None]] = set()


async def resolve_api_key(
    key: str, *, secret_key: str, cache: PrincipalCache, db: Database
) -> Principal:
    """The principal of a valid, unrevoked, unexpired key of a live tenant; else 401."""
    if not is_well_formed(key):
        raise AuthenticationFailedError()
    key_hash = hash_key(key, secret_key)
    principal = cache.get(key_hash)
    if principal is None:
        principal = await _load(key_hash, db)
        cache.put(key_hash, principal)
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
    now = utcnow()
    if api_key.last_used_at is None or as_utc(api_key.last_used_at) < now - LAST_USED_RESOLUTION:
        _touch_later(db, api_key.id)
    return Principal(
        tenant_id=tenant.id,
        tenant_slug=tenant.slug,
        tenant_status=tenant.status,
        key_id=api_key.id,
        scopes=frozenset(api_key.scopes) if api_key.scopes is not None else ALL_SCOPES,
        limits=tenant.limits,
        expires_at=as_utc(api_key.expires_at) if api_key.expires_at else None,
    )


def _touch_later(db: Database, key_id: str) -> None:
    # last_used_at is coarse (a minute) and written off the request path: at most one write
    # per key per cache miss, never one per request.
    async def touch() -> None:
        try:
            async with db.session() as session:
                await ApiKeyRepository(session).touch_last_used(key_id, utcnow())
        except Exception:  # a failed bookkeeping write must never fail a request
            logger.warning("could not update last_used_at of %s", key_id, exc_info=True)

    task = asyncio.get_running_loop().create_task(touch())
    _background.add(task)
    task.add_done_callback(_background.discard)
