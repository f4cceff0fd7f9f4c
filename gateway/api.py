"""The one place routers are mounted."""

from __future__ import annotations

from fastapi import FastAPI

from gateway import health
from gateway.agents.endpoints import router as agents_router
from gateway.chat.endpoints import router as chat_router
from gateway.conversations.endpoints import router as conversations_router
from gateway.limits.dependencies import V1_LIMITS
from gateway.limits.endpoints import router as limits_router
from gateway.runs.endpoints import router as runs_router
from gateway.runs.websocket import router as websocket_router
from gateway.usage.endpoints import router as usage_router
from tenants.admin.router import admin_router


def mount_routes(app: FastAPI) -> None:
    app.include_router(health.router)
    # Every /v1 router is mounted with V1_LIMITS: the request limit and x-ratelimit-* headers.
    app.include_router(agents_router, prefix="/v1", dependencies=V1_LIMITS)
    app.include_router(runs_router, prefix="/v1", dependencies=V1_LIMITS)
    app.include_router(conversations_router, prefix="/v1", dependencies=V1_LIMITS)
    app.include_router(chat_router, prefix="/v1", dependencies=V1_LIMITS)
    app.include_router(usage_router, prefix="/v1", dependencies=V1_LIMITS)
    app.include_router(limits_router, prefix="/v1", dependencies=V1_LIMITS)
    # The socket authenticates its handshake itself and counts each turn as a request.
    app.include_router(websocket_router, prefix="/v1")
    app.include_router(admin_router, prefix="/admin")
