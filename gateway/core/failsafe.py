"""The last line of error handling: every request gets an HTTP answer and keeps its connection.

An exception that no handler claims reaches Starlette's outermost middleware, which sends a
500 and then re-raises it to the server; uvicorn then closes the keep-alive connection, so the
client's other requests on it get no answer at all. `FailsafeMiddleware` sits inside that
middleware and returns normally instead:

- an error that says the database is unavailable (`is_database_unavailable`) is a 503
  `service_unavailable` / `database_unavailable` with Retry-After, and opens the database's
  short circuit so the next requests fail fast;
- anything else is logged with its traceback and answered 500 `internal_error`.

An error after the response has started (a broken stream) is re-raised: that connection has
to end.
"""

from __future__ import annotations

import logging

from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from gateway.core.db import Database, DatabaseUnavailableError, is_database_unavailable
from gateway.core.errors import GatewayError, error_body

logger = logging.getLogger("gateway.errors")


def unexpected_error_response(scope: Scope, error: Exception) -> JSONResponse:
    """The answer to an error no handler claimed (503 for the database, else 500)."""
    app = scope.get("app")
    db: Database | None = getattr(getattr(app, "state", None), "db", None)
    if is_database_unavailable(error):
        if db is not None:
            db.failed(error)
        logger.warning(
            "database unavailable on %s: %s: %s", scope.get("path"), type(error).__name__, error
        )
        unavailable = DatabaseUnavailableError(
            headers={"Retry-After": str(db.retry_after_s if db is not None else 1)}
        )
        return JSONResponse(
            unavailable.body(), status_code=unavailable.status_code, headers=unavailable.headers
        )
    logger.error("unhandled error on %s", scope.get("path"), exc_info=error)
    return JSONResponse(
        error_body("api_error", "internal_error", GatewayError.default_message), status_code=500
    )


class FailsafeMiddleware:
    """Pure ASGI: turn an unclaimed exception into a clean answer, never a dropped connection."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def tracked(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, receive, tracked)
        except Exception as error:
            if started:
                raise
            await unexpected_error_response(scope, error)(scope, receive, send)
