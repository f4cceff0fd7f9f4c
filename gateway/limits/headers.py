"""The OpenAI-style `x-ratelimit-*` headers and the middleware that adds them.

Limit checks leave their headers in the request state (`ratelimit_headers`); this pure-ASGI
middleware appends them to the response of every `/v1` request, errors included, and to a
WebSocket handshake's answer (its 101, or its refusal). A response
answered before the request limit was checked (an unknown path, a 405, a 413, a suspended
tenant) gets the tenant's `-requests` trio read without counting (`RequestLimiter.peek`; the
credential is resolved here if no dependency did). Where a token
limit applies and the request did not already learn the token windows (a run learns them at
admission, `GET /v1/limits` from its own read), the middleware reads them from the quota store
(one Redis round trip) so the `-tokens` trio is on every response of that tenant too.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterable
from typing import TYPE_CHECKING

from starlette.requests import HTTPConnection
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from gateway.auth.dependencies import current_principal
from gateway.core.errors import GatewayError
from gateway.core.state import scope_state
from gateway.limits.policy import QuotaLimits, seconds_to_midnight, seconds_to_month_end
from gateway.limits.requests import WindowState
from tenants.price.money import micro_to_usd

if TYPE_CHECKING:
    from gateway.auth.principal import Principal

logger = logging.getLogger("gateway.limits")

STATE_KEY = "ratelimit_headers"
HEADERS_TOO_LARGE = 431  # its headers are not read again
LIMIT_TOKENS = "x-ratelimit-limit-tokens"
LIMIT_SPEND = "x-ratelimit-limit-spend-usd"


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
        # Rounded up, as Retry-After: "0s" while the window still refuses would be wrong.
        "x-ratelimit-reset-requests": f"{math.ceil(tightest.reset_s)}s",
    }


def token_headers(
    limits: QuotaLimits, tpm_used: int, tpm_reset_s: float, tpd_used: int
) -> dict[str, str]:
    """The `-tokens` trio: the per-minute window when set, else the UTC day's."""
    if limits.tokens_per_minute is not None:
        limit, used, reset = limits.tokens_per_minute, tpm_used, tpm_reset_s
    elif limits.tokens_per_day is not None:
        limit, used, reset = limits.tokens_per_day, tpd_used, seconds_to_midnight()
    else:
        return {}
    return {
        LIMIT_TOKENS: str(limit),
        "x-ratelimit-remaining-tokens": str(max(0, limit - used)),
        "x-ratelimit-reset-tokens": f"{max(0.0, reset):.0f}s",
    }


def spend_headers(limits: QuotaLimits, spd_used: int, spm_used: int) -> dict[str, str]:
    """The `-spend-usd` trio (exact decimal USD) of the tighter spend window: the one with
    less left (the day's on a tie); {} when no spend limit applies."""
    windows: list[tuple[int, int, float]] = []
    if limits.spend_per_day is not None:
        windows.append((limits.spend_per_day, spd_used, seconds_to_midnight()))
    if limits.spend_per_month is not None:
        windows.append((limits.spend_per_month, spm_used, seconds_to_month_end()))
    if not windows:
        return {}
    limit, used, reset = min(windows, key=lambda w: w[0] - w[1])
    return {
        LIMIT_SPEND: micro_to_usd(limit),
        "x-ratelimit-remaining-spend-usd": micro_to_usd(max(0, limit - used)),
        "x-ratelimit-reset-spend-usd": f"{max(0.0, reset):.0f}s",
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


async def current_token_headers(scope: Scope) -> dict[str, str]:
    """The `-tokens` and `-spend-usd` trios of the request's tenant read now ({} when no token
    or spend limit applies, before authentication, or when the limits store cannot answer)."""
    principal: Principal | None = scope["state"].get("principal")
    if principal is None:
        return {}
    limits = QuotaLimits.of(principal.limits)
    if not limits.metered:
        return {}
    quotas = scope_state(scope).quotas
    try:
        snapshot = await quotas.peek(principal)
    except GatewayError as exc:  # fail-closed mode with Redis down: the response stands
        logger.debug("limits: no token headers (%s)", exc.code)
        return {}
    headers = token_headers(limits, snapshot.tpm_used, snapshot.tpm_reset_s, snapshot.tpd_used)
    headers.update(spend_headers(limits, snapshot.spd_used, snapshot.spm_used))
    return headers


REQUESTS_LIMIT = b"x-ratelimit-limit-requests"
RESPONSE_STARTS = frozenset(
    {"http.response.start", "websocket.accept", "websocket.http.response.start"}
)
CORS_EXPOSED = [
    f"x-ratelimit-{part}-{window}"
    for window in ("requests", "tokens", "spend-usd")
    for part in ("limit", "remaining", "reset")
] + ["Retry-After", "X-Request-ID", "x-should-retry"]
"""What a browser page on another origin may read of a response (with CORS configured)."""


async def current_request_headers(scope: Scope) -> dict[str, str]:
    """The `-requests` trio of the request's tenant read now, counting nothing, for a response
    answered before the request was counted (an unknown path, a 405, a 413, a suspended
    tenant): {} when the credential does not name an active or suspended tenant."""
    state = scope["state"]
    principal: Principal | None = state.get("principal")
    if principal is None and not state.get("auth_tried"):
        try:
            principal = await current_principal(HTTPConnection(scope))
        except GatewayError:
            principal = state.get("principal")  # set for a suspended tenant
    if principal is None:
        return {}
    return request_headers(await scope_state(scope).request_limiter.peek(principal))


class RateLimitHeadersMiddleware:
    """Append the queued `x-ratelimit-*` headers to `/v1` responses."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket") or not scope["path"].startswith("/v1"):
            await self.app(scope, receive, send)
            return
        state = scope.setdefault("state", {})

        async def send_with_headers(message: Message) -> None:
            # A WebSocket handshake's answer too: its 101 (the handshake counts no request:
            # each turn does) and its refusal (the denial response).
            if message["type"] in RESPONSE_STARTS:
                queued: dict[str, str] = state.get(STATE_KEY) or {}
                present = {name for name, _ in message.get("headers", [])}
                if (
                    "x-ratelimit-limit-requests" not in queued
                    and REQUESTS_LIMIT not in present
                    and message.get("status") != HEADERS_TOO_LARGE
                ):
                    queued = {**queued, **await current_request_headers(scope)}
                known = {LIMIT_TOKENS, LIMIT_SPEND}
                if not known & (set(queued) | {n.decode() for n in present}):
                    queued = {**queued, **await current_token_headers(scope)}
                if queued:
                    extra = [
                        (name.encode(), value.encode())
                        for name, value in queued.items()
                        if name.encode() not in present
                    ]
                    message["headers"] = [*message.get("headers", []), *extra]
            await send(message)

        await self.app(scope, receive, send_with_headers)
