"""The one place routers are mounted."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, FastAPI

from gateway import health
from gateway.agents.endpoints import router as agents_router
from gateway.chat.endpoints import router as chat_router
from gateway.chat.models import router as models_router
from gateway.conversations.endpoints import router as conversations_router
from gateway.core.json_body import JsonBodyRoute
from gateway.core.openapi import error_responses
from gateway.limits.dependencies import V1_LIMITS
from gateway.limits.endpoints import router as limits_router
from gateway.runs.actions import router as actions_router
from gateway.runs.endpoints import router as runs_router
from gateway.runs.websocket import router as websocket_router
from gateway.usage.endpoints import router as usage_router
from tenants.admin.auth import no_store, require_admin
from tenants.admin.login import router as admin_login_router
from tenants.agent.endpoints import router as admin_agents_router
from tenants.api_key.endpoints import router as admin_keys_router
from tenants.audit.endpoints import router as admin_audit_router
from tenants.jwt_config.endpoints import router as admin_jwt_router
from tenants.price.endpoints import router as admin_prices_router
from tenants.tenant.endpoints import router as admin_tenants_router
from tenants.tool_secret.endpoints import router as admin_tool_secrets_router
from tenants.upstream.endpoints import router as admin_upstreams_router
from tenants.usage.endpoints import router as admin_usage_router

V1_ERRORS = (400, 401, 403, 413, 422, 429, 503)
"""What any /v1 route can answer: bad body, credential, scope, size, validation, limits,
Redis in closed mode."""
RUN_ERRORS = (*V1_ERRORS, 404, 409, 502, 504)
"""A run adds: unknown agent or conversation, a busy conversation, the upstream."""
CHAT_ERRORS = (*V1_ERRORS, 404, 502, 504)
"""A chat completion adds: unknown agent (the model), the upstream."""
ADMIN_ERRORS = (400, 401, 403, 404, 409, 413, 422, 429, 503)
"""What any protected /admin route can answer (503: the database is down)."""
LOGIN_ERRORS = (400, 401, 403, 413, 422, 429, 503)


def admin_router() -> APIRouter:
    """The /admin API: `POST /login` is open, every other route requires an admin credential
    (`require_admin`: the admin token or an admin JWT; viewers may only GET)."""
    protected = APIRouter(
        route_class=JsonBodyRoute,
        dependencies=[Depends(require_admin)],
        responses=error_responses(*ADMIN_ERRORS),
    )
    for router in (
        admin_tenants_router,
        admin_keys_router,
        admin_agents_router,
        admin_jwt_router,
        admin_usage_router,
        admin_prices_router,
        admin_tool_secrets_router,
        admin_upstreams_router,
        admin_audit_router,
    ):
        protected.include_router(router)
    admin = APIRouter(route_class=JsonBodyRoute, tags=["admin"], dependencies=[Depends(no_store)])
    admin.include_router(admin_login_router, responses=error_responses(*LOGIN_ERRORS))
    admin.include_router(protected)
    return admin


def mount_routes(app: FastAPI) -> None:
    app.include_router(health.router)
    # Every /v1 router is mounted with V1_LIMITS: the request limit and x-ratelimit-* headers.
    v1: dict[str, Any] = {"prefix": "/v1", "dependencies": V1_LIMITS}
    app.include_router(agents_router, **v1, responses=error_responses(*V1_ERRORS))
    app.include_router(runs_router, **v1, responses=error_responses(*RUN_ERRORS))
    app.include_router(actions_router, **v1, responses=error_responses(*RUN_ERRORS))
    app.include_router(conversations_router, **v1, responses=error_responses(*V1_ERRORS))
    app.include_router(chat_router, **v1, responses=error_responses(*CHAT_ERRORS))
    app.include_router(models_router, **v1, responses=error_responses(*V1_ERRORS, 404))
    app.include_router(usage_router, **v1, responses=error_responses(*V1_ERRORS))
    app.include_router(limits_router, **v1, responses=error_responses(*V1_ERRORS))
    # The socket authenticates its handshake itself and counts each turn as a request.
    app.include_router(websocket_router, prefix="/v1")
    app.include_router(admin_router(), prefix="/admin")
