"""One cached AsyncOpenAI client (and SDK model provider) per upstream.

Clients are created lazily on first use, i.e. inside the serving event loop, and closed in the
lifespan. The upstream of the deployment comes from the standard `OPENAI_BASE_URL` /
`OPENAI_API_KEY` variables; the key is never logged.
"""

from __future__ import annotations

import httpx2
from agents.models.openai_provider import OpenAIProvider
from openai import AsyncOpenAI, DefaultAioHttpClient

from gateway.core.config import Settings


class ProviderRegistry:
    """Model providers keyed by (base_url, api_key), built once each."""

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._providers: dict[tuple[str | None, str], OpenAIProvider] = {}
        self._clients: list[AsyncOpenAI] = []

    @property
    def use_responses(self) -> bool:
        return self._settings.upstream_api == "responses"

    def default(self) -> OpenAIProvider:
        """The deployment's upstream."""
        settings = self._settings
        return self.get(settings.openai_base_url, settings.openai_api_key or "mock-key")

    def get(self, base_url: str | None, api_key: str) -> OpenAIProvider:
        """The provider of one upstream, created on first use."""
        cache_key = (base_url, api_key)
        provider = self._providers.get(cache_key)
        if provider is None:
            client = self._client(base_url, api_key)
            provider = OpenAIProvider(openai_client=client, use_responses=self.use_responses)
            self._providers[cache_key] = provider
            self._clients.append(client)
        return provider

    def _client(self, base_url: str | None, api_key: str) -> AsyncOpenAI:
        settings = self._settings
        http_client: httpx2.AsyncClient | None = None
        if settings.upstream_http_client == "aiohttp":
            http_client = DefaultAioHttpClient(timeout=settings.upstream_timeout_s)
        return AsyncOpenAI(
            api_key=api_key,
            base_url=base_url,
            timeout=settings.upstream_timeout_s,
            max_retries=settings.upstream_max_retries,
            http_client=http_client,
        )

    async def close(self) -> None:
        for client in self._clients:
            await client.close()
        self._clients.clear()
        self._providers.clear()
