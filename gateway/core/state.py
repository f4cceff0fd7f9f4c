"""The application state: one typed dataclass, built in the lifespan, reached by dependencies.

`gateway.app` builds every resource in its lifespan, puts them in an `AppState` and installs it
as `app.state` in place of Starlette's open attribute bag: a name nobody declared here is an
`AttributeError`, not a silent `None`. Route code never reads `app.state` itself; it asks for
`StateDep`, or for one of the small `Annotated` dependencies the domains define on top of
`app_state` (`SessionDep`, `SettingsDep`, `RunServiceDep`, ...).

The fields name classes of the layers above this one for the type checker only (imports under
`TYPE_CHECKING`, which the import contracts ignore): at run time this module is a leaf.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Annotated

from fastapi import Depends
from starlette.requests import HTTPConnection
from starlette.types import Scope

if TYPE_CHECKING:
    from redis.asyncio import Redis

    from gateway.agents.builder import AgentCache
    from gateway.agents.providers import ProviderRegistry
    from gateway.agents.upstreams import TenantUpstreams
    from gateway.auth.cache import PrincipalCache
    from gateway.auth.failures import AuthFailureLimiter
    from gateway.auth.jwt import IssuerCache
    from gateway.auth.principal import Principal
    from gateway.conversations.service import ConversationTurns
    from gateway.core.config import Settings
    from gateway.core.db import Database
    from gateway.core.drain import Drain
    from gateway.core.invalidation import Invalidator
    from gateway.limits.prices import PriceCache
    from gateway.limits.quotas import QuotaService
    from gateway.limits.requests import RequestLimiter
    from gateway.runs.service import RunService
    from gateway.tools.http import HttpTools
    from gateway.tools.mcp import McpServers
    from gateway.tools.secrets import ToolSecretCache
    from gateway.usage.recorder import UsageRecorder


@dataclass(slots=True, eq=False)
class AppState:
    """Every resource of one running app (one per process and app)."""

    settings: Settings
    """The settings the app was built with."""
    drain: Drain
    """The graceful stop on SIGTERM (readiness, connection close, run deadlines)."""
    db: Database
    """The async engine and session factory."""
    redis: Redis | None
    """The shared Redis client (None in embedded mode: limits and locks in memory)."""
    request_limiter: RequestLimiter
    """Per-tenant and per-user request windows."""
    quotas: QuotaService
    """Token and spend reservations, concurrency leases."""
    prices: PriceCache
    """The model price table, reloaded every `GATEWAY_PRICES_REFRESH_S`."""
    recorder: UsageRecorder
    """The write-behind usage queue."""
    providers: ProviderRegistry
    """One model client per upstream."""
    principals: PrincipalCache
    """API key hash -> Principal (TTL, invalidated per tenant)."""
    issuers: IssuerCache
    """JWT issuer -> its tenant's verification entry (TTL, invalidated per tenant)."""
    agents: AgentCache
    """Active agent versions and built SDK agents."""
    tool_secrets: ToolSecretCache
    """Tenants' tool secrets, decrypted (TTL, invalidated per tenant)."""
    http_tools: HttpTools
    """The pooled client of tenants' HTTP tools and its egress policy."""
    mcp: McpServers
    """Tenants' MCP server connections."""
    upstreams: TenantUpstreams
    """Tenants' own upstreams (base URL and key) and their clients."""
    auth_failures: AuthFailureLimiter
    """Failed credentials per client address (429 past the limit)."""
    invalidation: Invalidator
    """Drops a tenant's cached state here and on every replica."""
    runs: RunService
    """Resolves agents and executes runs."""
    conversations: ConversationTurns
    """Conversation turns under their per-conversation lock."""
    authenticate_tenant: Callable[[HTTPConnection], Awaitable[Principal]]
    """The tenant credential of a request resolved, or its 401 / 403 / 429 raised
    (`gateway.auth`'s `identify_tenant`: the key is not marked used): the admin routes refuse
    a valid tenant credential with 403 and an invalid one with 401, like any bad credential."""


def scope_state(scope: Scope) -> AppState:
    """The state of the app serving this ASGI scope (after its start-up)."""
    state = scope["app"].state
    if not isinstance(state, AppState):
        raise RuntimeError("the app's lifespan has not started")
    return state


def app_state(connection: HTTPConnection) -> AppState:
    """The state of the app serving this request or WebSocket (after its start-up)."""
    return scope_state(connection.scope)


async def get_app_state(connection: HTTPConnection) -> AppState:
    """Dependency form of `app_state` (async: FastAPI runs plain `def` ones in a thread)."""
    return app_state(connection)


StateDep = Annotated[AppState, Depends(get_app_state)]
