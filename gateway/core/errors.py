"""The error tree and the one place that renders errors as JSON.

Every error leaves the gateway in the OpenAI shape, so OpenAI client libraries surface it::

    {"error": {"type": "...", "code": "...", "message": "...", "param": null}}

    GatewayError (500 api_error)
    ├── InvalidRequestError (400 invalid_request_error)
    │   ├── GuardrailTriggeredError (400 guardrail_triggered, param = which guardrail)
    │   ├── ValidationFailedError (422)
    │   └── PayloadTooLargeError (413)
    ├── AuthenticationFailedError (401 authentication_error, one body for every cause)
    ├── PermissionDeniedError (403 permission_error)
    ├── NotFoundError (404 not_found_error)
    ├── ConflictError (409 conflict_error)
    ├── RateLimitedError (429 rate_limit_error, Retry-After)
    ├── UpstreamError (502 upstream_error)
    ├── ServiceUnavailableError (503 service_unavailable)
    └── UpstreamTimeoutError (504 upstream_timeout)
        └── RunTimeoutError (504, code run_timeout: the run's overall deadline)
"""

from __future__ import annotations

import logging
import math
import re
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from gateway.core.json_body import FORM_EXPECTED_KEY, invalid_json_error
from gateway.core.unions import is_tag

logger = logging.getLogger("gateway.errors")


class GatewayError(Exception):
    """Base of every error the gateway answers with; carries status, type and code."""

    status_code = 500
    error_type = "api_error"
    default_code: str | None = None
    default_message = "The gateway failed to handle the request."

    def __init__(
        self,
        message: str | None = None,
        *,
        code: str | None = None,
        param: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        self.message = message or self.default_message
        self.code = code or self.default_code
        self.param = param
        self.headers = headers or {}
        super().__init__(self.message)

    def body(self) -> dict[str, Any]:
        """The JSON error body."""
        return error_body(self.error_type, self.code, self.message, self.param)

    def stream_body(self) -> dict[str, Any]:
        """The error as a stream event's data (`run.failed`, a chat completions error chunk):
        the body, plus `retry_after` (integer seconds) where an HTTP answer would carry
        `Retry-After`, since a stream's status and headers have already been sent."""
        body = self.body()
        retry_after = self.headers.get("Retry-After")
        if retry_after is not None:
            body["error"]["retry_after"] = int(retry_after)
        return body


class InvalidRequestError(GatewayError):
    status_code = 400
    error_type = "invalid_request_error"
    default_message = "The request is invalid."


class ValidationFailedError(InvalidRequestError):
    status_code = 422


class GuardrailTriggeredError(InvalidRequestError):
    """One of the agent's guardrails stopped the run; `param` names it
    (`input.max_chars`, `input.blocked_patterns[2]`, `input.classifier`, ...)."""

    default_code = "guardrail_triggered"

    def __init__(self, param: str, message: str) -> None:
        super().__init__(message, param=param)


class PayloadTooLargeError(InvalidRequestError):
    status_code = 413
    default_code = "body_too_large"
    default_message = "The request body is too large."


class AuthenticationFailedError(GatewayError):
    status_code = 401
    error_type = "authentication_error"
    default_code = "invalid_api_key"
    default_message = "Invalid or missing credential."

    def __init__(
        self, message: str | None = None, *, code: str | None = None, param: str | None = None
    ) -> None:
        # RFC 9110 11.6.1: a 401 names the scheme it wants (an API key or a JWT, both Bearer).
        super().__init__(message, code=code, param=param, headers={"WWW-Authenticate": "Bearer"})


class PermissionDeniedError(GatewayError):
    status_code = 403
    error_type = "permission_error"
    default_message = "The credential is not allowed to do this."


class NotFoundError(GatewayError):
    status_code = 404
    error_type = "not_found_error"
    default_code = "not_found"
    default_message = "Not found."


class ConflictError(GatewayError):
    status_code = 409
    error_type = "conflict_error"
    default_code = "conflict"


class RateLimitedError(GatewayError):
    status_code = 429
    error_type = "rate_limit_error"

    def __init__(self, message: str, *, code: str, retry_after_s: float) -> None:
        seconds = max(1, math.ceil(retry_after_s))
        super().__init__(message, code=code, headers={"Retry-After": str(seconds)})


class UpstreamError(GatewayError):
    status_code = 502
    error_type = "upstream_error"
    default_code = "upstream_failed"
    default_message = "The model upstream failed."


class ServiceUnavailableError(GatewayError):
    status_code = 503
    error_type = "service_unavailable"
    default_message = "A required service is unavailable."


class ShuttingDownError(ServiceUnavailableError):
    """The replica is shutting down and its grace for in-flight work is over: retry (another
    replica answers)."""

    default_code = "shutting_down"
    default_message = "The gateway replica is shutting down; retry the request."

    def __init__(self) -> None:
        super().__init__(headers={"Retry-After": "1"})


class UpstreamTimeoutError(GatewayError):
    status_code = 504
    error_type = "upstream_timeout"
    default_code = "upstream_timeout"
    default_message = "The model upstream did not answer in time."


class RunTimeoutError(UpstreamTimeoutError):
    default_code = "run_timeout"
    default_message = "The run did not finish in time."


def error_body(
    error_type: str, code: str | None, message: str, param: str | None = None
) -> dict[str, Any]:
    """The OpenAI-shaped error body."""
    return {"error": {"type": error_type, "code": code, "message": message, "param": param}}


_HTTP_TYPES = {
    400: ("invalid_request_error", "bad_request"),
    401: ("authentication_error", "invalid_api_key"),
    403: ("permission_error", "forbidden"),
    404: ("not_found_error", "not_found"),
    405: ("invalid_request_error", "method_not_allowed"),
    409: ("conflict_error", "conflict"),
    413: ("invalid_request_error", "body_too_large"),
    431: ("invalid_request_error", "headers_too_large"),
    429: ("rate_limit_error", "rate_limited"),
}


async def _gateway_error(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, GatewayError)
    return JSONResponse(exc.body(), status_code=exc.status_code, headers=exc.headers)


def text_length_message(error: dict[str, Any]) -> str | None:
    """Pydantic's length error of a string in characters ("at most 100000 items" is its
    wording for a length checked after validation, meant for lists)."""
    value, ctx = error.get("input"), error.get("ctx") or {}
    if error.get("type") not in ("too_long", "too_short") or not isinstance(value, str):
        return None
    if "max_length" in ctx:
        bound = f"at most {ctx['max_length']}"
    elif "min_length" in ctx:
        bound = f"at least {ctx['min_length']}"
    else:
        return None
    return f"Text should have {bound} characters, not {len(value)}"


async def _validation_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    errors = exc.errors()
    # A field the route does not take is named first: "name: Extra inputs are not permitted"
    # says more about `{"name": …}` than the required field it left out.
    first = next((e for e in errors if e.get("type") == "extra_forbidden"), None)
    if first is not None:
        # Unless the same object's kind is wrong (`role: "tool"`, a part of `type:
        # "image_url"`): its other fields are unknown because of that, so the kind is named.
        parent = tuple(first.get("loc", ()))[:-1]
        first = next(
            (
                e
                for e in errors
                if e.get("type") == "literal_error" and tuple(e.get("loc", ()))[:-1] == parent
            ),
            first,
        )
    else:
        first = errors[0] if errors else {}
    if (request.scope.get("state") or {}).get(FORM_EXPECTED_KEY):
        fields = ", ".join(
            str(e["loc"][-1]) for e in errors if e.get("type") == "missing" and e.get("loc")
        )
        message = (
            "This endpoint takes a form body (Content-Type: application/x-www-form-urlencoded)"
            + (f"; missing: {fields}." if fields else ".")
        )
        return JSONResponse(error_body("invalid_request_error", "invalid_value", message), 422)
    invalid = invalid_json_error(request.scope.get("state"))
    empty = first.get("type") == "missing" and tuple(first.get("loc", ())) == ("body",)
    if invalid is not None or empty or first.get("type") == "json_invalid":
        reason = invalid.msg if invalid is not None else (first.get("ctx") or {}).get("error")
        if invalid is None and empty:
            reason = "the body is empty; send a JSON object"
        # "Cannot be read": too deep a nesting or an integer past 64 bits is valid JSON.
        message = f"The body cannot be read as JSON: {reason or 'JSON decode error'}."
        body = error_body("invalid_request_error", "invalid_json", message)
        return JSONResponse(body, status_code=422)
    loc = [
        str(part)
        for part in first.get("loc", ())
        # Nor an untagged union's member (`function-after[…]`, `list[…]`): no field is named so.
        if part not in ("body", "query", "path") and not is_tag(part) and "[" not in str(part)
    ]
    param = ".".join(loc) or None
    message = text_length_message(first) or first.get("msg", "Invalid request.")
    if param:
        message = f"{param}: {message}"
    body = error_body("invalid_request_error", "invalid_value", message, param)
    return JSONResponse(body, status_code=422)


async def _http_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    error_type, code = _HTTP_TYPES.get(exc.status_code, ("api_error", None))
    message = exc.detail if isinstance(exc.detail, str) else "Request failed."
    headers = dict(exc.headers) if exc.headers else None
    if exc.status_code == 405:
        headers = {**(headers or {}), "Allow": allowed_methods(request) or headers_allow(headers)}
    return JSONResponse(
        error_body(error_type, code, message), status_code=exc.status_code, headers=headers
    )


_OPERATIONS = frozenset({"get", "put", "post", "delete", "options", "head", "patch", "trace"})


def allowed_methods(request: Request) -> str:
    """Every documented method of this path. Starlette's 405 names only the methods of the first
    route matching the path, though GET and DELETE of one resource are two routes."""
    methods: set[str] = set()
    for template, operations in request.app.openapi()["paths"].items():
        if re.fullmatch(re.sub(r"\{[^}]+\}", "[^/]+", template), request.url.path):
            methods |= {method.upper() for method in operations if method in _OPERATIONS}
    return ", ".join(sorted(methods))


def headers_allow(headers: dict[str, str] | None) -> str:
    """The `Allow` Starlette computed (for a path the schema does not document)."""
    return (headers or {}).get("Allow", "")


async def _unexpected_error(request: Request, exc: Exception) -> JSONResponse:
    logger.exception("unhandled error on %s", request.scope.get("path"), exc_info=exc)
    return JSONResponse(
        error_body("api_error", "internal_error", GatewayError.default_message), status_code=500
    )


def install_error_handlers(app: FastAPI) -> None:
    """Render every error, expected or not, as the OpenAI-shaped JSON body."""
    app.add_exception_handler(GatewayError, _gateway_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(Exception, _unexpected_error)
