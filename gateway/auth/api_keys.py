"""Resolve an API key to a Principal: checksum (no I/O), cache, then the database.

Failures (malformed, unknown, expired, revoked) count against the client address in the
`AuthFailureLimiter`; a blocked address gets 429 before any database look-up, except for a key
resolved on this replica lately (it is vouched for: not a guess). A cache hit
costs what it did before: checksum, HMAC, one dict look-up.

During a `GATEWAY_SECRET_KEY` rotation (`old_secret_keys`), a key not found under the current
key's HMAC is looked up under each old key's; when found, its stored HMAC is rewritten under
the current key, so the next look-up is the usual one and the old key can be retired.
"""

from __future__ import annotations

from collections.abc import Sequence

from gateway.auth.cache import PrincipalCache
from gateway.auth.failures import AuthFailureLimiter
from gateway.auth.principal import ALL_SCOPES, Principal
from gateway.core.clock import as_utc, utcnow
from gateway.core.db import Database
from gateway.core.errors import AuthenticationFailedError
from tenants.api_key.keys import hash_key, is_well_formed
from tenants.api_key.repository import ApiKeyRepository


async def resolve_api_key(
    key: str,
    *,
    secret_key: str,
    cache: PrincipalCache,
    db: Database,
    failures: AuthFailureLimiter | None = None,
    address: str = "",
    old_secret_keys: Sequence[str] = (),
) -> Principal:
    """The principal of a valid, unrevoked, unexpired key of a live tenant; else 401 (429
    when the client address has failed too often)."""
    if not is_well_formed(key):
        raise await failed(failures, address)
    key_hash = hash_key(key, secret_key)
    principal = cache.get(key_hash)
    if principal is None:
        if failures is not None:
            failures.check(address, key_hash)  # a key resolved lately passes a block
        try:
            principal = await cache.get_or_load(
                key_hash, lambda: _load(key, key_hash, db, old_secret_keys)
            )
        except AuthenticationFailedError:
            if failures is not None:
                failures.forget(key_hash)
            raise await failed(failures, address) from None
        if failures is not None:
            failures.vouch(key_hash)
    if principal.expires_at is not None and principal.expires_at <= utcnow():
        raise await failed(failures, address)
    return principal


async def failed(failures: AuthFailureLimiter | None, address: str) -> AuthenticationFailedError:
    """Count a failure of `address` and return the 401 to raise (429 if it is blocked)."""
    if failures is not None:
        failures.check(address)
        await failures.failed(address)
    return AuthenticationFailedError()


async def _load(key: str, key_hash: str, db: Database, old_secret_keys: Sequence[str]) -> Principal:
    # A unit of work: the look-up only reads, except the rare rehash under the current key.
    async with db.unit() as session:
        repository = ApiKeyRepository(session)
        found = await repository.get_with_tenant_by_hash(key_hash)
        for old in old_secret_keys if found is None else ():
            found = await repository.get_with_tenant_by_hash(hash_key(key, old))
            if found is not None:
                await repository.rehash(found[0].id, key_hash)
                break
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
