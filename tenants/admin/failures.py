"""Failed admin authentications (bad logins, wrong admin bearers) count against the client
address in the app state's failure limiter (`AppState.auth_failures`, the one bad
tenant credentials count in): past the limit the address gets 429 before any check."""

from __future__ import annotations

from typing import Protocol

from starlette.requests import HTTPConnection

from gateway.core.state import app_state

ADMIN_BUCKET = "login:"
"""The prefix of admin credentials' buckets (their own, stricter limit)."""


class FailureLimiter(Protocol):
    """Counts failed authentications per client address (see gateway.auth.failures)."""

    def check(self, address: str) -> None: ...

    async def failed(self, address: str) -> None: ...


def client_address(request: HTTPConnection) -> str:
    """The peer address of the request (the proxy's, unless uvicorn trusts its headers)."""
    return request.client.host if request.client else "unknown"


def admin_address(request: HTTPConnection) -> str:
    """The failure-limiter bucket of admin credentials from this client (logins and admin
    bearers share it: both guess at an admin credential)."""
    return ADMIN_BUCKET + client_address(request)


def failure_limiter(request: HTTPConnection) -> FailureLimiter:
    return app_state(request).auth_failures
