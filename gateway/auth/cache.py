"""Per-process credential caches, indexed by tenant so a tenant-wide invalidation is cheap.

`PrincipalCache` maps an API key's hash to its Principal; `IssuerCache` maps a JWT issuer to
its tenant's verification entry. Both keep `tenant_id -> {cache keys}` so dropping one tenant
costs the size of that tenant's entries, not a scan. An invalidation that lands while a load is
in flight marks that load stale: its (possibly pre-change) result is returned to its waiters but
not cached. Entries also expire after the TTL (≤ 5 s), the bound when an invalidation message
is lost.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Generic, Protocol, TypeVar

from gateway.auth.principal import Principal
from gateway.core.cache import TTLCache


class _TenantOwned(Protocol):
    @property
    def tenant_id(self) -> str: ...


V = TypeVar("V", bound=_TenantOwned)

NO_TENANT = ""
"""Index bucket of negative entries (unknown issuers): dropped on every invalidation."""


class TenantIndexedCache(TTLCache[str, V], Generic[V]):
    """A TTL cache whose entries can be dropped per tenant."""

    def __init__(self, *, ttl_s: float, max_size: int, stale_s: float = 0.0) -> None:
        super().__init__(ttl_s=ttl_s, max_size=max_size, stale_s=stale_s)
        self._by_tenant: dict[str, set[str]] = {}
        self._epoch = 0
        self._stale: set[str] = set()

    @staticmethod
    def tenant_of(value: V) -> str:
        """The tenant an entry belongs to (NO_TENANT for negative entries)."""
        return value.tenant_id

    def put(self, key: str, value: V) -> None:
        if key not in self._entries and len(self._entries) >= self.max_size:
            self._unindex(next(iter(self._entries)))
        super().put(key, value)
        self._by_tenant.setdefault(self.tenant_of(value), set()).add(key)

    def _unindex(self, key: str) -> None:
        entry = self._entries.get(key)
        if entry is not None:
            keys = self._by_tenant.get(self.tenant_of(entry[1]))
            if keys is not None:
                keys.discard(key)

    def discard(self, key: str) -> None:
        self._unindex(key)
        super().discard(key)

    def invalidate_tenant(self, tenant_id: str) -> int:
        """Drop the tenant's entries (and every negative entry); returns how many went."""
        self._epoch += 1
        dropped = 0
        for bucket in (tenant_id, NO_TENANT):
            for key in self._by_tenant.pop(bucket, ()):
                dropped += self._entries.pop(key, None) is not None
        return dropped

    def clear(self) -> None:
        self._epoch += 1
        self._by_tenant.clear()
        super().clear()

    async def get_or_load(self, key: str, load: Callable[[], Awaitable[V]]) -> V:
        value = self.get(key)
        if value is not None:
            return value
        epoch = self._epoch

        async def guarded() -> V:
            loaded = await load()
            if self._epoch != epoch:
                self._stale.add(key)
            return loaded

        return await super().get_or_load(key, guarded)

    def _settle(self, key: str, done: object) -> None:
        if key in self._stale:
            self._stale.discard(key)
            self._loading.pop(key, None)
            return
        super()._settle(key, done)  # type: ignore[arg-type]


class PrincipalCache(TenantIndexedCache[Principal]):
    """Resolved API keys by key hash, trusted for at most `ttl_s` (≤ 5 s) without a DB read."""
