"""One cached upstream client (and SDK model provider) per upstream.

Clients are created lazily on first use, i.e. inside the serving event loop, and closed in the
lifespan. The upstream of the deployment comes from the standard `OPENAI_BASE_URL` /
`OPENAI_API_KEY` variables; the key is never logged. The client is the lean one
(`gateway.agents.wire`) unless `GATEWAY_UPSTREAM_CLIENT=openai` selects the stock
`AsyncOpenAI`.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Mapping
from typing import Any, cast

import aiohttp
import httpx2
from agents.models.openai_provider import OpenAIProvider
from openai import APIConnectionError, AsyncOpenAI, DefaultAioHttpClient
from openai._models import FinalRequestOptions
from openai._vendor.httpx_aiohttp.transport import AiohttpTransport

from gateway.agents.truncation import CutAnswersComplete
from gateway.agents.wire.client import LeanOpenAI
from gateway.core.config import Settings
from gateway.core.egress import refusal_of
from observability.metrics import record_upstream_retry

OPENAI_DEFAULT_BASE_URL = "https://api.openai.com/v1"
UpstreamClient = AsyncOpenAI | LeanOpenAI


class StockOpenAI(AsyncOpenAI):
    """The stock `AsyncOpenAI` (`GATEWAY_UPSTREAM_CLIENT=openai`), counting each attempt it
    retries in `gateway_upstream_retries_total` as the lean client does (its retries were
    invisible: a call a retry saved showed only as `ok`)."""

    async def _sleep_for_retry(
        self,
        *,
        retries_taken: int,
        max_retries: int,
        options: FinalRequestOptions,
        response: httpx2.Response | None,
    ) -> None:
        body = options.json_data
        model = body.get("model") if isinstance(body, Mapping) else None
        if response is not None:
            status = str(response.status_code)
        else:  # called from the client's `except` of the failed attempt
            failed = sys.exc_info()[1]
            timed_out = isinstance(failed, httpx2.TimeoutException | TimeoutError)
            status = "timeout" if timed_out else "unreachable"
        record_upstream_retry(str(model or ""), status)
        await super()._sleep_for_retry(
            retries_taken=retries_taken,
            max_retries=max_retries,
            options=options,
            response=response,
        )


class RefusalsAreFinal(AiohttpTransport):
    """The stock client's transport through the egress guard: a connection the guard refuses
    is raised as the client's own `APIConnectionError`, which it never retries (it retried
    the refusal through its backoff, as it does any connection error)."""

    async def handle_async_request(self, request: httpx2.Request) -> httpx2.Response:
        try:
            return await super().handle_async_request(request)
        except Exception as exc:
            refusal = refusal_of(exc)
            if refusal is None:
                raise
            raise APIConnectionError(message=str(refusal), request=request) from exc


def lean_client(
    settings: Settings,
    base_url: str | None,
    api_key: str,
    session_factory: Callable[[], aiohttp.ClientSession],
) -> LeanOpenAI:
    """The lean client of one upstream, with the deployment's timeout and retries."""
    return LeanOpenAI(
        api_key=api_key,
        base_url=base_url or OPENAI_DEFAULT_BASE_URL,
        timeout=settings.upstream_timeout_s,
        max_retries=settings.upstream_max_retries,
        session_factory=session_factory,
    )


def default_session() -> aiohttp.ClientSession:
    """The pooled session of the deployment's upstream (as the stock aiohttp transport's)."""
    return aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=1000, keepalive_timeout=5.0))


def provider_for(client: UpstreamClient, *, use_responses: bool) -> OpenAIProvider:
    """The SDK provider over either client (the SDK's models duck-type the client); a
    Responses answer cut by the output limit reaches the SDK as a completed one
    (`gateway.agents.truncation`)."""
    wrapped = CutAnswersComplete(client) if use_responses else client
    return OpenAIProvider(openai_client=cast(Any, wrapped), use_responses=use_responses)


class ProviderRegistry:
    """Model providers keyed by (base_url, api_key), built once each."""

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._providers: dict[tuple[str | None, str], OpenAIProvider] = {}
        self._clients: list[UpstreamClient] = []

    @property
    def use_responses(self) -> bool:
        return self._settings.upstream_api == "responses"

    def default(self) -> OpenAIProvider:
        """The deployment's upstream."""
        settings = self._settings
        return self.get(settings.upstream_base_url, settings.openai_api_key or "mock-key")

    def get(self, base_url: str | None, api_key: str) -> OpenAIProvider:
        """The provider of one upstream, created on first use."""
        cache_key = (base_url, api_key)
        provider = self._providers.get(cache_key)
        if provider is None:
            client = self._client(base_url, api_key)
            provider = provider_for(client, use_responses=self.use_responses)
            self._providers[cache_key] = provider
            self._clients.append(client)
        return provider

    def _client(self, base_url: str | None, api_key: str) -> UpstreamClient:
        settings = self._settings
        if settings.upstream_client == "lean":
            return lean_client(settings, base_url, api_key, default_session)
        http_client: httpx2.AsyncClient | None = None
        if settings.upstream_http_client == "aiohttp":
            http_client = DefaultAioHttpClient(timeout=settings.upstream_timeout_s)
        return StockOpenAI(
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
