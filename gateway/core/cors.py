"""CORS (`GATEWAY_CORS_ALLOW_ORIGINS`): Starlette's `CORSMiddleware`, with a refused preflight
answered in the API's JSON error shape (Starlette answers it in plain text)."""

from __future__ import annotations

from fastapi.middleware.cors import CORSMiddleware
from starlette.datastructures import Headers
from starlette.responses import JSONResponse, Response

from gateway.core.errors import error_body


class JsonCORSMiddleware(CORSMiddleware):
    """`CORSMiddleware` whose refused preflights (origin, method or header not allowed) are
    a JSON 400 `invalid_request_error` / `cors_refused`, their CORS headers kept."""

    def preflight_response(self, request_headers: Headers) -> Response:
        response = super().preflight_response(request_headers)
        if response.status_code != 400:
            return response
        reason = bytes(response.body).decode()
        headers = {
            name: value
            for name, value in response.headers.items()
            if name.lower() not in ("content-length", "content-type")
        }
        body = error_body("invalid_request_error", "cors_refused", f"{reason}.")
        return JSONResponse(body, status_code=400, headers=headers)
