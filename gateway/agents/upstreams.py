"""Tenant upstreams at run time: one cached AsyncOpenAI client (and SDK provider) per
(upstream, version).

The upstream row of (tenant, name) is trusted for a few seconds and dropped on every replica
when an admin changes or deletes it (this cache is one of the `Invalidator`'s), so the next
run after a change reads the new version and gets a new client. The client it replaces is
retired: runs that started on it keep it until `RETIRE_AFTER_S`, then it is closed (all are
closed at shutdown). Every connection goes through the egress guard (`GuardedConnector`
behind the openai client's aiohttp transport) and redirects are not followed.
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass

from agents.models.openai_provider import OpenAIProvider
from aiohttp.abc import AbstractResolver
from openai import DefaultAioHttpClient

# The aiohttp transport the openai package ships for `DefaultAioHttpClient`: given our own
# session factory, every upstream connection uses the guarded connector.
from gateway.agents.providers import (
    RefusalsAreFinal,
    StockOpenAI,
    UpstreamClient,
    lean_client,
    provider_for,
)
from gateway.auth.cache import TenantIndexedCache
from gateway.core.config import Settings
from gateway.core.db import Database
from gateway.core.egress import EgressPolicy, guarded_session
from gateway.core.errors import UpstreamError
from tenants.upstream.repository import UpstreamRepository
from tenants.upstream.service import api_key_of

RETIRE_AFTER_S = 600.0
"""How long a replaced client stays open for the runs that started on it."""


@dataclass(frozen=True, slots=True)
class UpstreamEntry:
    """A tenant's upstream as the data plane uses it (`id` None: there is no such upstream)."""

    tenant_id: str
    id: str | None
    version: int = 0
    base_url: str = ""
    use_responses: bool = False
    api_key: str = ""


class TenantUpstreams(TenantIndexedCache[UpstreamEntry]):
    """Upstream rows by (tenant, name), and the providers built from them."""

    def __init__(self, settings: Settings, db: Database) -> None:
        super().__init__(
            ttl_s=settings.principal_cache_ttl_s, max_size=settings.principal_cache_size
        )
        self._settings = settings
        self._db = db
        self.policy = EgressPolicy.parse(settings.egress_allow)
        self.resolver: AbstractResolver | None = None
        """The DNS resolver of upstream sessions (None: the system's `getaddrinfo`)."""
        self._providers: dict[str, tuple[int, OpenAIProvider, UpstreamClient]] = {}
        self._retired: set[asyncio.Task[None]] = set()

    async def provider(self, tenant_id: str, name: str) -> OpenAIProvider:
        """The provider of the tenant's upstream `name` (502 `upstream_not_found` if gone)."""

        async def load() -> UpstreamEntry:
            async with self._db.session() as session:
                row = await UpstreamRepository(session).get(tenant_id, name)
            if row is None:
                return UpstreamEntry(tenant_id=tenant_id, id=None)
            return UpstreamEntry(
                tenant_id=tenant_id,
                id=row.id,
                version=row.version,
                base_url=row.base_url,
                use_responses=row.api == "responses",
                api_key=api_key_of(row, self._settings.secret_keys),
            )

        entry = await self.get_or_load(f"{tenant_id}/{name}", load)
        if entry.id is None:
            raise UpstreamError(
                f"The agent's upstream '{name}' does not exist.", code="upstream_not_found"
            )
        cached = self._providers.get(entry.id)
        if cached is not None and cached[0] == entry.version:
            return cached[1]
        if cached is not None and cached[0] > entry.version:
            return cached[1]  # a stale read (another replica's older row): keep the newer
        try:
            client = self._client(entry)
        except Exception as exc:
            # Any client's refusal of the URL (httpx's InvalidURL, yarl's ValueError): a URL
            # stored before the PUT checks refused it.
            raise UpstreamError(
                f"The agent's upstream '{name}' has a base URL that cannot be used: {exc}",
                code="upstream_unreachable",
            ) from None
        provider = provider_for(client, use_responses=entry.use_responses)
        self._providers[entry.id] = (entry.version, provider, client)
        if cached is not None:
            self._retire(cached[2])
        return provider

    def _client(self, entry: UpstreamEntry) -> UpstreamClient:
        settings = self._settings
        policy, resolver = self.policy, self.resolver
        if settings.upstream_client == "lean":
            return lean_client(
                settings,
                entry.base_url,
                entry.api_key,
                lambda: guarded_session(policy, resolver=resolver),
            )
        transport = RefusalsAreFinal(client=lambda: guarded_session(policy, resolver=resolver))
        http_client = DefaultAioHttpClient(
            timeout=settings.upstream_timeout_s, transport=transport, follow_redirects=False
        )
        return StockOpenAI(
            api_key=entry.api_key,
            base_url=entry.base_url,
            timeout=settings.upstream_timeout_s,
            max_retries=settings.upstream_max_retries,
            http_client=http_client,
        )

    def _retire(self, client: UpstreamClient) -> None:
        async def close_later() -> None:
            try:
                await asyncio.sleep(RETIRE_AFTER_S)
            finally:
                await client.close()

        task = asyncio.get_running_loop().create_task(close_later())
        self._retired.add(task)
        task.add_done_callback(self._retired.discard)

    async def close(self) -> None:
        """Close every client (the lifespan's end)."""
        for task in list(self._retired):
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        for _, _, client in self._providers.values():
            await client.close()
        self._providers.clear()
