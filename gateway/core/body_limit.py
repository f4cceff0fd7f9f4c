"""Pure-ASGI request caps: 413 for a body over the cap, 431 for headers over theirs, both with
the JSON error body, never a plain-text page.

A declared `Content-Length` over the cap is refused before anything is read. A chunked body
(`Transfer-Encoding`, no length declared) is read here, before the app sees the request, and
refused as soon as it crosses the cap; under it, the app receives it whole. So the cap holds
on every route, also one that never reads its body (it would otherwise act and answer 200) or
reads a form. The buffer is bounded by the cap, and only chunked requests pay for it.

Headers: `gateway serve` refuses a request line and headers over `GATEWAY_MAX_HEADER_BYTES`
while they arrive (`gateway.core.http_protocol`); this check is the second line for any other
ASGI server, on the headers it parsed.
"""

from __future__ import annotations

import orjson
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
        framed = False
        for name, value in scope["headers"]:
            header_bytes += len(name) + len(value) + 4  # ": " and CRLF, as on the wire
            if name == b"content-length":
                if not value.isdigit() or int(value) > self.max_body_bytes:
                    await send_error(send, 413, "body_too_large", body_message(self.max_body_bytes))
                    return
            elif name == b"transfer-encoding":
                framed = True
        if header_bytes > self.max_header_bytes:
            await send_error(send, 431, "headers_too_large", header_message(self.max_header_bytes))
            return
        if not framed:  # a declared length (checked above), or no body at all
            await self.app(scope, receive, send)
            return
        body = await read_capped(receive, self.max_body_bytes)
        if body is None:  # over the cap (or the client left while sending it)
            await send_error(send, 413, "body_too_large", body_message(self.max_body_bytes))
            return
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if replayed:
                return await receive()  # after the body: the disconnect, when it comes
            replayed = True
            return {"type": "http.request", "body": body, "more_body": False}

        await self.app(scope, replay, send)


async def read_capped(receive: Receive, limit: int) -> bytes | None:
    """The whole request body, or None once it passes `limit` bytes (or the client leaves)."""
    chunks: list[bytes] = []
    received = 0
    while True:
        message = await receive()
        if message["type"] != "http.request":
            return None
        chunk = message.get("body", b"")
        received += len(chunk)
        if received > limit:
            return None
        chunks.append(chunk)
        if not message.get("more_body", False):
            return b"".join(chunks)


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
