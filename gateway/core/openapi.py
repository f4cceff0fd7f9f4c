"""The error responses routes document in the OpenAPI schema.

Every error leaves the gateway in the OpenAI shape (errors.py), not FastAPI's default
`{"detail": [...]}`: the schema says so, so that generated clients and contract testers
(schemathesis) expect what they will get. Routers are mounted with `error_responses(...)`
naming the statuses they can answer; declaring 422 replaces FastAPI's `HTTPValidationError`.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field


class ErrorObject(BaseModel):
    type: str = Field(
        description=(
            "The kind of error: `invalid_request_error`, `authentication_error`, "
            "`permission_error`, `not_found_error`, `conflict_error`, `rate_limit_error`, "
            "`upstream_error`, `upstream_timeout`, `service_unavailable` or `api_error`."
        )
    )
    code: str | None = Field(description="What exactly went wrong; for 429, the limit's name.")
    message: str
    param: str | None = Field(description="The request field at fault, when there is one.")


class ErrorResponse(BaseModel):
    """The OpenAI-shaped error body of every 4xx and 5xx answer."""

    error: ErrorObject


_RETRY_AFTER = {
    "Retry-After": {
        "description": "Seconds to wait before retrying (integer ≥ 1).",
        "schema": {"type": "integer", "minimum": 1},
    }
}
_DESCRIPTIONS = {
    400: "Malformed request (body not JSON, invalid value).",
    401: "Missing, malformed, unknown, revoked or expired credential.",
    403: "The credential lacks a scope or role, or the tenant is suspended.",
    404: "No such resource (another tenant's resources are 404 too).",
    409: "Conflict (the name exists; the conversation has a turn in flight).",
    413: "Request body over `GATEWAY_MAX_BODY_BYTES`.",
    422: "A field failed validation (`param` names it).",
    429: "A limit or quota is exhausted (`code` names it); `Retry-After` says for how long.",
    502: "The model upstream failed.",
    503: "A required service (Redis in `closed` mode, the database) is unavailable.",
    504: "The model upstream did not answer in time.",
}


def error_responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """FastAPI `responses=` documenting these error statuses with the error body."""
    documented: dict[int | str, dict[str, Any]] = {}
    for status in statuses:
        entry: dict[str, Any] = {"model": ErrorResponse, "description": _DESCRIPTIONS[status]}
        if status in (429, 503):
            entry["headers"] = _RETRY_AFTER
        documented[status] = entry
    return documented
