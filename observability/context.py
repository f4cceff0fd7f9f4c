"""Per-request context shared by the access log, every log line and the run metrics.

The access-log middleware opens one `RequestContext` per HTTP request in a contextvar; code
further down (auth, runs) fills it in, and the middleware writes the access line from it.
Tasks started during the request (the streamed run's producer) copy the contextvar and so
share the same object.
"""

from __future__ import annotations

from contextvars import ContextVar
from dataclasses import dataclass


@dataclass(slots=True)
class RequestContext:
    """What the access line of one request reports beyond the HTTP basics."""

    request_id: str
    tenant: str | None = None
    agent: str | None = None
    tokens: int = 0


current_request: ContextVar[RequestContext | None] = ContextVar("gateway_request", default=None)


def current_request_id() -> str | None:
    """The request id of the request being served, if any."""
    context = current_request.get()
    return context.request_id if context is not None else None


def add_tokens(tokens: int, *, tenant: str, agent: str) -> None:
    """Attribute a settled run's tokens (and its tenant and agent) to the current request."""
    context = current_request.get()
    if context is not None:
        context.tokens += tokens
        context.tenant = tenant
        context.agent = agent
