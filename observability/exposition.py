"""`GET /metrics` and prometheus_client's multiprocess mode.

Single process (`gateway serve`, tests): `/metrics` renders the process registry.

Several workers (`gateway serve --workers N`, N > 1): the CLI creates a fresh directory for
this instance (`observability.multiproc`) and exports it as `PROMETHEUS_MULTIPROC_DIR` before
uvicorn spawns the workers; that variable is prometheus_client's own switch and must be set
before the library is imported, which is why it is the one environment variable set outside
`Settings`. Every worker then writes its values to files there, `/metrics` (answered by any
worker) sums them over all workers, and a worker that shuts down marks itself dead so its
live gauges disappear (`mark_worker_dead`). Multiprocess mode is detected from
prometheus_client itself, so an app built in a process without the variable never reads files.
"""

from __future__ import annotations

import asyncio
import hmac
import os
import time
from collections.abc import Callable
from functools import cache
from typing import Any, cast

from fastapi import FastAPI, Request
from fastapi.responses import Response
from prometheus_client import REGISTRY, CollectorRegistry, multiprocess, values
from prometheus_client.exposition import choose_encoder
from prometheus_fastapi_instrumentator import Instrumentator
from prometheus_fastapi_instrumentator.metrics import Info
from prometheus_fastapi_instrumentator.metrics import default as default_http_metrics
from prometheus_fastapi_instrumentator.middleware import PrometheusInstrumentatorMiddleware
from starlette.requests import Request as StarletteRequest

from gateway.core.config import Settings
from observability.metrics import WORKERS

_UNAUTHORIZED = (
    b'{"error":{"type":"authentication_error","code":"invalid_metrics_token",'
    b'"message":"A valid metrics bearer token is required.","param":null}}'
)


def multiprocess_enabled() -> bool:
    """True when prometheus_client was imported in multiprocess mode (values live in files)."""
    return values.ValueClass is not values.MutexValue


def mark_worker_started() -> None:
    """Publish this worker's start time (one `gateway_worker_start_time_seconds` per worker)."""
    WORKERS.set(time.time())


def mark_worker_dead() -> None:
    """On worker shutdown in multiprocess mode: drop this process's live gauges."""
    if multiprocess_enabled():
        multiprocess.mark_process_dead(os.getpid())  # type: ignore[no-untyped-call]


def forget_worker(pid: int) -> None:
    """From the supervisor, for a worker that died without its own `mark_worker_dead` (a
    SIGKILL, a crash): drop its live gauges (runs in flight, its start time), or its runs
    would stay in flight on every dashboard. Its counters stay: they are totals."""
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        multiprocess.mark_process_dead(pid)  # type: ignore[no-untyped-call]


@cache
def _http_instrumentation() -> Callable[[Info], None]:
    # The HTTP series are registered once per process: an app built later in the same process
    # (tests, reloads) reuses them instead of failing to register duplicates and going silent.
    instrumentation = default_http_metrics()
    assert instrumentation is not None, "HTTP metrics were registered outside this module"
    return instrumentation


def _render(accept: str) -> tuple[bytes, str]:
    encoder, content_type = choose_encoder(accept)
    if multiprocess_enabled():
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
        return encoder(registry), content_type
    return encoder(REGISTRY), content_type


class RouteCachedMiddleware(PrometheusInstrumentatorMiddleware):
    """The instrumentator's middleware with its route-template lookup remembered per method,
    path and root path. The stock lookup flattens the app's routers and matches the path
    against every route on each request (about 70 us here); the answer depends on nothing
    else, and the routes do not change once the app serves. At most `MAX_PATHS` answers are
    kept (concrete paths carry ids): when full, the memory starts again."""

    MAX_PATHS = 4096

    def __init__(self, app: Any, **kwargs: Any) -> None:
        super().__init__(app, **kwargs)
        self._handlers: dict[tuple[str, str, str], tuple[str, bool]] = {}

    def _get_handler(self, request: StarletteRequest) -> tuple[str, bool]:
        scope = request.scope
        key = (scope.get("method", ""), scope.get("path", ""), scope.get("root_path", ""))
        found = self._handlers.get(key)
        if found is None:
            found = super()._get_handler(request)
            if len(self._handlers) >= self.MAX_PATHS:
                self._handlers.clear()
            self._handlers[key] = found
        return found


def install_http_metrics(app: FastAPI, settings: Settings) -> None:
    """HTTP request metrics labelled by route template, and `GET /metrics`."""
    Instrumentator(
        should_group_status_codes=False,
        # A path no route serves (a scan, a typo, a 404 flood) is counted as handler "none",
        # never under its raw path.
        should_ignore_untemplated=False,
        should_group_untemplated=True,
        excluded_handlers=["/metrics", "/healthz", "/readyz"],
    ).add(_http_instrumentation()).instrument(app)
    for entry in app.user_middleware:  # the instrumentator's own, with the lookup remembered
        factory: Any = entry.cls
        if factory is PrometheusInstrumentatorMiddleware:
            entry.cls = cast(Any, RouteCachedMiddleware)
    expected = settings.metrics_token.encode() if settings.metrics_token else None
    threaded = multiprocess_enabled()

    async def metrics(request: Request) -> Response:
        if expected is not None:
            # The scheme is case-insensitive (RFC 9110 11.1), as on the API's own routes.
            scheme, _, token = request.headers.get("authorization", "").partition(" ")
            given = token.strip().encode() if scheme.lower() == "bearer" else b""
            if not hmac.compare_digest(given, expected):
                return Response(
                    _UNAUTHORIZED,
                    status_code=401,
                    media_type="application/json",
                    headers={"WWW-Authenticate": "Bearer"},
                )
        accept = request.headers.get("accept", "")
        # In multiprocess mode rendering reads every worker's files: off the event loop.
        body, content_type = (
            await asyncio.to_thread(_render, accept) if threaded else _render(accept)
        )
        return Response(body, media_type=content_type)

    app.add_api_route("/metrics", metrics, methods=["GET"], include_in_schema=False)
