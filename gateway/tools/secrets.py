"""The tool-signing secrets of tenants as the data plane reads them: decrypted once, cached
per tenant for a few seconds and dropped on every replica when an admin rotates them (the
cache is one of the `Invalidator`'s)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from gateway.auth.cache import TenantIndexedCache
from gateway.core.clock import utcnow
from gateway.core.db import Database
from tenants.tool_secret.repository import ToolSecretRepository
from tenants.tool_secret.service import signing_secrets


@dataclass(frozen=True, slots=True)
class SigningSecrets:
    """The secrets that sign a tenant's calls now (empty: the tenant has none)."""

    tenant_id: str
    secrets: tuple[str, ...]


class ToolSecretCache(TenantIndexedCache[SigningSecrets]):
    """Signing secrets by tenant id, trusted for at most `ttl_s` without a DB read."""

    def __init__(
        self, db: Database, secret_key: str | Sequence[str], *, ttl_s: float, max_size: int
    ) -> None:
        super().__init__(ttl_s=ttl_s, max_size=max_size)
        self._db = db
        self._secret_key = secret_key

    async def for_tenant(self, tenant_id: str) -> tuple[str, ...]:
        """The secrets signing the tenant's calls, current first."""

        async def load() -> SigningSecrets:
            async with self._db.session() as session:
                row = await ToolSecretRepository(session).get(tenant_id)
            return SigningSecrets(tenant_id, signing_secrets(row, self._secret_key, utcnow()))

        return (await self.get_or_load(tenant_id, load)).secrets
