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


SECURITY_SCHEMES: dict[str, dict[str, Any]] = {
    "tenantBearer": {
        "type": "http",
        "scheme": "bearer",
        "description": "A tenant API key (`gw_…`) or an end-user JWT the tenant signed.",
    },
    "tenantApiKey": {
        "type": "apiKey",
        "in": "header",
        "name": "X-API-Key",
        "description": "A tenant API key (`gw_…`).",
    },
    "adminBearer": {
        "type": "http",
        "scheme": "bearer",
        "description": "`GATEWAY_ADMIN_TOKEN`, or an admin JWT from `POST /admin/login`.",
    },
    "adminLogin": {
        "type": "oauth2",
        "description": "An admin user's name and password, exchanged at `POST /admin/login`.",
        "flows": {"password": {"tokenUrl": "/admin/login", "scopes": {}}},
    },
}
_TENANT: list[dict[str, list[str]]] = [{"tenantBearer": []}, {"tenantApiKey": []}]
_ADMIN: list[dict[str, list[str]]] = [{"adminBearer": []}, {"adminLogin": []}]
_OPEN = {"/admin/login"}


def add_security(schema: dict[str, Any]) -> dict[str, Any]:
    """Declare the credentials the API takes (generated clients and Swagger UI's Authorize
    read them): tenant credentials on `/v1`, admin ones on `/admin` (not on its login)."""
    schema.setdefault("components", {})["securitySchemes"] = SECURITY_SCHEMES
    for path, operations in schema.get("paths", {}).items():
        if path in _OPEN:
            continue
        security = (
            _TENANT if path.startswith("/v1/") else _ADMIN if path.startswith("/admin") else None
        )
        if security is None:
            continue
        for operation in operations.values():
            if isinstance(operation, dict) and "responses" in operation:
                operation["security"] = security
    return schema
