"""The OpenAI-style `x-ratelimit-*` headers (SPEC §6) and the middleware that adds them.

Limit checks leave their headers in the request state (`ratelimit_headers`); this pure-ASGI
middleware appends them to the response of every `/v1` request, errors included.
"""

from __future__ import annotations

from collections.abc import Iterable

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from gateway.limits.requests import WindowState

STATE_KEY = "ratelimit_headers"


def request_headers(states: Iterable[WindowState]) -> dict[str, str]:
    """The `-requests` trio of the tightest request limit checked."""
    tightest: WindowState | None = None
    for state in states:
        if tightest is None or state.remaining < tightest.remaining:
            tightest = state
    if tightest is None:
        return {}
    return {
        "x-ratelimit-limit-requests": str(tightest.limit),
        "x-ratelimit-remaining-requests": str(max(0, tightest.remaining)),
        "x-ratelimit-reset-requests": f"{tightest.reset_s:.0f}s",
    }


def add_headers(scope_state: dict[str, object], headers: dict[str, str]) -> None:
    """Queue headers for the response of this request."""
    if not headers:
        return
    queued = scope_state.get(STATE_KEY)
    if isinstance(queued, dict):
        queued.update(headers)
    else:
        scope_state[STATE_KEY] = dict(headers)


class RateLimitHeadersMiddleware:
    """Append the queued `x-ratelimit-*` headers to `/v1` responses."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not scope["path"].startswith("/v1"):
            await self.app(scope, receive, send)
            return
        state = scope.setdefault("state", {})

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                queued = state.get(STATE_KEY)
                if queued:
                    present = {name for name, _ in message.get("headers", [])}
                    extra = [
                        (name.encode(), value.encode())
                        for name, value in queued.items()
                        if name.encode() not in present
                    ]
                    message["headers"] = [*message.get("headers", []), *extra]
            await send(message)

        await self.app(scope, receive, send_with_headers)
