"""App assembly: `create_app` builds the FastAPI app; the lifespan owns every resource."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from gateway.agents.builder import AgentCache
from gateway.agents.providers import ProviderRegistry
from gateway.api import mount_routes
from gateway.auth.cache import PrincipalCache
from gateway.core.body_limit import BodyLimitMiddleware
from gateway.core.config import Settings, get_settings
from gateway.core.db import Database
from gateway.core.errors import install_error_handlers
from gateway.core.gc_tuning import tune_gc
from gateway.core.redis import create_redis
from gateway.runs.service import RunService
from gateway.usage.recorder import UsageRecorder
from observability.metrics import install_http_metrics
from observability.middleware import RequestIdMiddleware
from observability.tracing import install_trace_processor


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    settings: Settings = app.state.settings
    db = Database(settings.database_url)
    recorder = UsageRecorder(
        db,
        batch_size=settings.usage_batch_size,
        flush_interval_s=settings.usage_flush_interval_s,
        max_queue=settings.usage_queue_size,
    )
    providers = ProviderRegistry(settings)
    redis = create_redis(settings)
    app.state.redis = redis
    app.state.db = db
    app.state.recorder = recorder
    app.state.providers = providers
    app.state.principals = PrincipalCache(
        ttl_s=settings.principal_cache_ttl_s, max_size=settings.principal_cache_size
    )
    app.state.agents = AgentCache(
        ttl_s=settings.principal_cache_ttl_s, max_size=settings.principal_cache_size
    )
    app.state.runs = RunService(
        settings=settings,
        db=db,
        agents=app.state.agents,
        providers=providers,
        recorder=recorder,
    )
    install_trace_processor(export_to_openai=settings.tracing_export)
    recorder.start()
    tune_gc(settings.gc_gen0_threshold)
    try:
        yield
    finally:
        await recorder.close()
        await providers.close()
        if redis is not None:
            await redis.aclose()
        await db.dispose()


def create_app(settings: Settings | None = None) -> FastAPI:
    """The gateway app for `settings` (default: read from the environment)."""
    settings = settings or get_settings()
    app = FastAPI(
        title="Agent Gateway",
        version="0.1.0",
        summary="Multi-tenant gateway for OpenAI Agents SDK agents.",
        lifespan=lifespan,
    )
    app.state.settings = settings
    install_error_handlers(app)
    mount_routes(app)
    if settings.metrics_enabled:
        install_http_metrics(app)
    app.add_middleware(BodyLimitMiddleware, max_body_bytes=settings.max_body_bytes)
    app.add_middleware(RequestIdMiddleware)
    return app
