"""App assembly: `create_app` builds the FastAPI app; the lifespan owns every resource."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any

from fastapi import Depends, FastAPI

from gateway.agents import sdk_cache, sdk_gather
from gateway.agents.builder import AgentCache
from gateway.agents.providers import ProviderRegistry
from gateway.agents.upstreams import TenantUpstreams
from gateway.api import mount_routes
from gateway.auth.cache import PrincipalCache
from gateway.auth.dependencies import identify_tenant
from gateway.auth.failures import AuthFailureLimiter
from gateway.auth.jwt import IssuerCache
from gateway.conversations.lock import ConversationLocks
from gateway.conversations.service import ConversationTurns
from gateway.core.allocator import start_trimming
from gateway.core.background import BackgroundTasks
from gateway.core.body_limit import BodyLimitMiddleware
from gateway.core.config import Settings, get_settings
from gateway.core.cors import JsonCORSMiddleware
from gateway.core.db import Database
from gateway.core.drain import Drain, DrainMiddleware
from gateway.core.errors import install_error_handlers
from gateway.core.failsafe import FailsafeMiddleware
from gateway.core.gc_tuning import tune_gc
from gateway.core.invalidation import Invalidator
from gateway.core.openapi import add_security
from gateway.core.redis import create_redis, warm_up
from gateway.core.state import AppState
from gateway.core.text import refuse_control_characters
from gateway.limits.breaker import RedisBreaker
from gateway.limits.budgets import BudgetRecount
from gateway.limits.headers import CORS_EXPOSED, RateLimitHeadersMiddleware
from gateway.limits.prices import PriceCache
from gateway.limits.quotas import QuotaService
from gateway.limits.requests import SCRIPT as REQUEST_WINDOW
from gateway.limits.requests import RequestLimiter
from gateway.runs.service import RunService
from gateway.tools.http import HttpTools
from gateway.tools.mcp import McpServers
from gateway.tools.secrets import ToolSecretCache
from gateway.usage.recorder import UsageRecorder
from observability.exposition import install_http_metrics
from observability.middleware import RequestIdMiddleware
from observability.telemetry import start_telemetry
from tenants.tenant.service import check_default_tenant_limits

WARM_CONNECTIONS = 64
"""Redis connections the limits client opens at start-up (it grows on demand beyond)."""
SCRIPTS = [REQUEST_WINDOW]


def lifespan_for(
    settings: Settings, drain: Drain
) -> Callable[[FastAPI], AbstractAsyncContextManager[None]]:
    """The lifespan of an app built for `settings`, draining with `drain`."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        async with _resources(settings, drain) as state:
            # The typed state replaces Starlette's open bag (see gateway/core/state.py).
            app.state = state  # type: ignore[assignment]
            yield

    return lifespan


@asynccontextmanager
async def _resources(settings: Settings, drain: Drain) -> AsyncIterator[AppState]:
    """Build every resource of the app, start its background tasks, and close them all."""
    db = Database(
        settings.database_url,
        connect_timeout_s=settings.database_connect_timeout_s,
        pool_timeout_s=settings.database_pool_timeout_s,
        statement_timeout_s=settings.database_statement_timeout_s,
        retry_s=settings.database_retry_s,
    )
    recorder = UsageRecorder(
        db,
        batch_size=settings.usage_batch_size,
        flush_interval_s=settings.usage_flush_interval_s,
        max_queue=settings.usage_queue_size,
        dead_letter_path=settings.usage_dead_letter_path or None,
        spill_path=settings.usage_spill_path or None,
        room_timeout_s=settings.usage_room_timeout_s,
        shutdown_flush_s=settings.usage_shutdown_flush_s,
    )
    providers = ProviderRegistry(settings)
    redis = create_redis(settings)
    breaker = RedisBreaker(
        retry_s=settings.limits_redis_retry_s, fail_open=settings.limits_failure_mode == "open"
    )
    # Its own client: every quota and request-limit call is time-boxed by its caller.
    quota_redis = create_redis(settings, caller_timeouts=True)
    request_limiter = RequestLimiter(settings, breaker, quota_redis)
    if quota_redis is not None:
        await warm_up(quota_redis, WARM_CONNECTIONS, SCRIPTS, timeout_s=2.0)
    quotas = QuotaService(settings, quota_redis, breaker)
    principals = PrincipalCache(
        ttl_s=settings.principal_cache_ttl_s,
        max_size=settings.principal_cache_size,
        stale_s=settings.principal_cache_stale_s,
    )
    tool_secrets = ToolSecretCache(
        db,
        settings.secret_keys,
        ttl_s=settings.principal_cache_ttl_s,
        max_size=settings.principal_cache_size,
    )
    http_tools = HttpTools(settings, tool_secrets)
    upstreams = TenantUpstreams(settings, db)
    mcp = McpServers(http_tools.policy, settings.tool_max_response_bytes)
    agents = AgentCache(
        ttl_s=settings.principal_cache_ttl_s,
        max_size=settings.principal_cache_size,
        http_tools=http_tools,
        stale_s=settings.principal_cache_stale_s,
        mcp=mcp,
    )
    issuers = IssuerCache(
        ttl_s=settings.principal_cache_ttl_s,
        max_size=settings.principal_cache_size,
        stale_s=settings.principal_cache_stale_s,
    )
    # The control plane's admin routes reach it as their change notifier.
    invalidation = Invalidator(
        settings, caches=[principals, issuers, tool_secrets, upstreams, agents], redis=redis
    )
    invalidation.start()
    prices = PriceCache(db, settings.prices_refresh_s)
    await prices.load_or_wait()
    runs = RunService(
        settings=settings,
        drain=drain,
        db=db,
        agents=agents,
        providers=providers,
        recorder=recorder,
        quotas=quotas,
        upstreams=upstreams,
        mcp=mcp,
        prices=prices,
    )
    locks = ConversationLocks(
        redis=redis,
        breaker=breaker,
        prefix=settings.redis_key_prefix,
        ttl_s=settings.limits_lease_ttl_s,
        timeout_s=settings.redis_timeout_ms / 1000,
    )
    state = AppState(
        settings=settings,
        drain=drain,
        db=db,
        redis=redis,
        request_limiter=request_limiter,
        quotas=quotas,
        prices=prices,
        recorder=recorder,
        providers=providers,
        principals=principals,
        issuers=issuers,
        agents=agents,
        tool_secrets=tool_secrets,
        http_tools=http_tools,
        mcp=mcp,
        upstreams=upstreams,
        auth_failures=AuthFailureLimiter(
            limit=settings.auth_failure_limit,
            admin_limit=settings.admin_auth_failure_limit,
            window_s=settings.auth_failure_window_s,
            redis=redis,
            key_prefix=settings.redis_key_prefix,
        ),
        invalidation=invalidation,
        runs=runs,
        conversations=ConversationTurns(
            db,
            locks,
            max_items=settings.conversation_max_items,
            waiting=runs.approvals.conversation_waiting,
        ),
        authenticate_tenant=identify_tenant,
    )
    telemetry = start_telemetry(settings)
    recorder.start()
    quotas.start()
    budgets = BudgetRecount(db, quotas, settings.limits_budget_recount_s)
    budgets.start()
    prices.start()
    locks.start()
    runs.approvals.start()
    # Process-wide (the SDK's module functions): the last started app's setting applies.
    if settings.sdk_run_cache:
        sdk_cache.install()
        sdk_gather.install()
    else:
        sdk_cache.uninstall()
        sdk_gather.uninstall()
    tune_gc(settings.gc_gen0_threshold)
    memory = BackgroundTasks("malloc-trim")
    start_trimming(memory, settings)
    try:
        yield state
    finally:
        await memory.drain()
        await budgets.drain()
        await invalidation.close()
        await quotas.drain()
        await prices.tasks.drain()
        await locks.drain()
        await runs.approvals.drain()
        await recorder.close()
        await telemetry.stop()
        await providers.close()
        await http_tools.close()
        await upstreams.close()
        await mcp.close()
        for client in (redis, quota_redis):
            if client is not None:
                await client.aclose()
        await db.dispose()


def create_app(settings: Settings | None = None) -> FastAPI:
    """The gateway app for `settings` (default: read from the environment)."""
    settings = settings or get_settings()
    check_default_tenant_limits(settings)
    # Driven by the server on SIGTERM (gateway.serving.server); idle in tests and embedded use.
    drain = Drain(settings.drain_delay, settings.shutdown_grace_s)
    app = FastAPI(
        title="Agent Gateway",
        version="0.1.0",
        summary="Multi-tenant gateway for OpenAI Agents SDK agents.",
        lifespan=lifespan_for(settings, drain),
        dependencies=[Depends(refuse_control_characters)],
        # `/v1/agents/` is a JSON 404 like any unknown path: Starlette's default answers a
        # bare 307 built from the Host header (an open redirect, and not the error shape).
        redirect_slashes=False,
    )
    # Before start-up the server reads it here (gateway.serving.server); from then on it is the
    # AppState's `drain`, the same object.
    app.state.drain = drain
    install_error_handlers(app)
    mount_routes(app)
    build_schema = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            app.openapi_schema = add_security(build_schema())
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
    # Innermost: the middlewares around it (metrics, request id) see its 500/503 like any answer.
    app.add_middleware(FailsafeMiddleware)
    app.add_middleware(
        BodyLimitMiddleware,
        max_body_bytes=settings.max_body_bytes,
        max_header_bytes=settings.max_header_bytes,
    )
    # Outside the body limit: its 413s are counted under their route like any answer.
    if settings.metrics_enabled:
        install_http_metrics(app, settings)
    # Outside the body limit: its 413 carries the tenant's x-ratelimit headers too.
    app.add_middleware(RateLimitHeadersMiddleware)
    app.add_middleware(RequestIdMiddleware)
    app.add_middleware(DrainMiddleware, drain=drain)
    origins = [origin.strip() for origin in settings.cors_allow_origins.split(",")]
    if any(origins):
        # Outermost: a browser's preflight is answered before anything else looks at it.
        app.add_middleware(
            JsonCORSMiddleware,
            allow_origins=[origin for origin in origins if origin],
            allow_methods=["GET", "POST", "PUT", "PATCH", "DELETE"],
            # Any request header: OpenAI's browser client sends its own (`X-Stainless-*`);
            # no cookies are ever used (allow_credentials stays off), so nothing rides on them.
            allow_headers=["*"],
            expose_headers=CORS_EXPOSED,
            max_age=600,
        )
    return app
