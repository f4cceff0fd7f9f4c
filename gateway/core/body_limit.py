"""Pure-ASGI request caps: 413 for a body over the cap, 431 for headers over theirs, both with
the JSON error body, never a plain-text page.

A declared `Content-Length` over the cap is refused before anything is read; a chunked body is
counted as it arrives and refused as soon as it crosses the cap: the receive raises an HTTP 413
exception, which FastAPI passes through its body reading (any other exception there would
become a generic 400) to the error handler.

Headers: `gateway serve` refuses a request line and headers over `GATEWAY_MAX_HEADER_BYTES`
while they arrive (`gateway.core.http_protocol`); this check is the second line for any other
ASGI server, on the headers it parsed.
"""

from __future__ import annotations

import orjson
from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from gateway.core.errors import error_body


class BodyLimitMiddleware:
    def __init__(self, app: ASGIApp, max_body_bytes: int, max_header_bytes: int) -> None:
        self.app = app
        self.max_body_bytes = max_body_bytes
        self.max_header_bytes = max_header_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        header_bytes = len(scope.get("raw_path") or b"") + len(scope.get("query_string", b""))
        for name, value in scope["headers"]:
            header_bytes += len(name) + len(value) + 4  # ": " and CRLF, as on the wire
            if name == b"content-length" and (
                not value.isdigit() or int(value) > self.max_body_bytes
            ):
                await send_error(send, 413, "body_too_large", body_message(self.max_body_bytes))
                return
        if header_bytes > self.max_header_bytes:
            await send_error(send, 431, "headers_too_large", header_message(self.max_header_bytes))
            return
        received = 0
        limit = self.max_body_bytes

        async def counting_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    raise HTTPException(413, body_message(limit))
            return message

        await self.app(scope, counting_receive, send)


def body_message(limit: int) -> str:
    return f"The request body is larger than {limit} bytes."


def header_message(limit: int) -> str:
    return f"The request line and headers are larger than {limit} bytes."


def error_response(code: str, message: str) -> tuple[list[tuple[bytes, bytes]], bytes]:
    """The headers and JSON body of an error answered outside the app (connection closed)."""
    body = orjson.dumps(error_body("invalid_request_error", code, message))
    headers = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(body)).encode()),
        (b"connection", b"close"),
    ]
    return headers, body


async def send_error(send: Send, status: int, code: str, message: str) -> None:
    headers, body = error_response(code, message)
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
