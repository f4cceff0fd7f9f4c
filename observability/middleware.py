"""Pure-ASGI middleware on the hot path (no `BaseHTTPMiddleware`): request id and access log.

`RequestIdMiddleware` accepts a sane `X-Request-ID` or makes one, echoes it on the response,
opens the request's `RequestContext` (so every log line of the request carries the id) and,
when the response is done, writes one JSON access line: request id, method, route template
(never the raw path), status, latency, and when known the tenant, agent and tokens.
"""

from __future__ import annotations

import logging
import re
import secrets
import time
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from observability.context import RequestContext, current_request

_VALID_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")
_CREDENTIAL = re.compile(r"gw_[0-9A-Za-z]{32}|eyJ[\w-]*\.[\w-]*\.")
"""An API key (`gw_` + 32 base62 characters, anywhere in the id) or a JWT (a base64url JSON
header and a second segment): never logged nor echoed as a request id."""


def _request_id(incoming: str | None) -> str:
    """The client's `X-Request-ID` when it is a plain id, else a new one."""
    if incoming and _VALID_REQUEST_ID.match(incoming) and not _CREDENTIAL.search(incoming):
        return incoming
    return secrets.token_hex(8)


access_logger = logging.getLogger("gateway.access")


class RequestIdMiddleware:
    """Request id in, request id out, one access line per HTTP request."""

    def __init__(self, app: ASGIApp, *, access_log: bool = True) -> None:
        self.app = app
        self.access_log = access_log

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        incoming = None
        for name, value in scope["headers"]:
            if name == b"x-request-id":
                incoming = value.decode("latin-1")
                break
        request_id = _request_id(incoming)
        scope.setdefault("state", {})["request_id"] = request_id
        header = (b"x-request-id", request_id.encode())
        context = RequestContext(request_id)
        token = current_request.set(context)
        status = 500
        started = time.perf_counter()

        async def send_with_id(message: Message) -> None:
            nonlocal status
            kind = message["type"]
            if kind in ("http.response.start", "websocket.http.response.start"):
                status = message["status"]
                message.setdefault("headers", [])
                message["headers"] = [*message["headers"], header]
            elif kind == "websocket.accept":
                status = 101
                message["headers"] = [*message.get("headers", []), header]
            elif kind == "websocket.close" and status == 500:
                status = 403  # closed before it was accepted: the handshake was refused
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        finally:
            current_request.reset(token)
            if self.access_log and access_logger.isEnabledFor(logging.INFO):
                _log_access(scope, context, status, time.perf_counter() - started)


def _log_access(scope: Scope, context: RequestContext, status: int, elapsed: float) -> None:
    state: dict[str, Any] = scope.get("state") or {}
    tenant = context.tenant
    if tenant is None:
        principal = state.get("principal")
        tenant = getattr(principal, "tenant_slug", None)
    access_logger.info(
        "request",
        extra={
            "request_id": context.request_id,
            "method": scope.get("method"),
            "route": route_template(scope),
            "status": status,
            "latency_ms": round(elapsed * 1000, 2),
            "tenant": tenant,
            "agent": context.agent or state.get("agent") or _agent_in_path(scope),
            "tokens": context.tokens,
        },
    )


_AGENT_NAME = re.compile(r"[a-z0-9_-]{1,64}")


def _agent_in_path(scope: Scope) -> str | None:
    """The agent a `/v1/agents/{name}/…` request named, when it was answered before the run
    knew its agent (a request-limit 429, a missing scope): the operator still sees which
    agent is being refused. Only a well-formed name: anything else names no agent."""
    if not scope.get("path", "").startswith("/v1/agents/"):
        return None
    name = (scope.get("path_params") or {}).get("name")
    return name if isinstance(name, str) and _AGENT_NAME.fullmatch(name) else None


def route_template(scope: Scope) -> str | None:
    """The matched route's template with its router prefix (`/v1/agents/{name}/runs`).

    FastAPI leaves the route of an included router in the scope with its own path only
    (`/agents/{name}/runs`); the static prefix is what precedes the concrete suffix.
    """
    route = scope.get("route")
    template = getattr(route, "path", None)
    if template is None:
        return None
    path: str = scope.get("path", "")
    try:
        suffix = route.path_format.format(**scope.get("path_params", {}))  # type: ignore[union-attr]
    except (AttributeError, KeyError, IndexError, ValueError):
        return str(template)
    if suffix and path.endswith(suffix):
        return path[: len(path) - len(suffix)] + str(template)
    return str(template)
