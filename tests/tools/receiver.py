"""A real HTTP tool endpoint on loopback (aiohttp.web in the test's loop) that records every
request it gets, and an independent check of the gateway's signature header."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

Handler = Callable[[web.Request, bytes], Awaitable[web.StreamResponse]]


@dataclass
class Received:
    path: str
    headers: dict[str, str]
    body: bytes


@dataclass
class Receiver:
    base_url: str
    requests: list[Received] = field(default_factory=list)
    handlers: dict[str, Handler] = field(default_factory=dict)

    def url(self, path: str) -> str:
        return f"{self.base_url}{path}"


async def echo(request: web.Request, body: bytes) -> web.StreamResponse:
    """Answer the arguments back as JSON."""
    import orjson

    payload = orjson.loads(body)
    return web.json_response({"ok": True, "arguments": payload["arguments"]})


@asynccontextmanager
async def receiver() -> AsyncIterator[Receiver]:
    """A receiver on 127.0.0.1 (a free port); `handlers[path]` answers that path (default:
    echo)."""
    state = Receiver(base_url="")

    async def handle(request: web.Request) -> web.StreamResponse:
        body = await request.read()
        state.requests.append(Received(request.path, dict(request.headers), body))
        handler = state.handlers.get(request.path, echo)
        return await handler(request, body)

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", handle)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    state.base_url = f"http://127.0.0.1:{port}"
    try:
        yield state
    finally:
        await runner.cleanup()


def verify_signature(header: str, body: bytes, secret: str, tolerance_s: int = 300) -> bool:
    """What a tenant's receiver does, written from the documented format only: parse
    `t=…,v1=…[,v1=…]`, recompute HMAC-SHA256(secret, "<t>.<body>") and compare in constant
    time with any v1; refuse a stale timestamp."""
    pairs = [part.split("=", 1) for part in header.split(",")]
    timestamps = [value for key, value in pairs if key == "t"]
    signatures = [value for key, value in pairs if key == "v1"]
    if len(timestamps) != 1 or not signatures:
        return False
    if abs(time.time() - int(timestamps[0])) > tolerance_s:
        return False
    expected = hmac.new(
        secret.encode(), timestamps[0].encode() + b"." + body, hashlib.sha256
    ).hexdigest()
    return any(hmac.compare_digest(expected, candidate) for candidate in signatures)


async def slow(request: web.Request, body: bytes) -> web.StreamResponse:
    await asyncio.sleep(5)
    return web.json_response({"late": True})


def answering(status: int, text: str = "", headers: dict[str, str] | None = None) -> Handler:
    async def handler(request: web.Request, body: bytes) -> web.StreamResponse:
        return web.Response(status=status, text=text, headers=headers)

    return handler


def signature_values(header: str) -> dict[str, Any]:
    pairs = [part.split("=", 1) for part in header.split(",")]
    return {
        "t": [value for key, value in pairs if key == "t"],
        "v1": [value for key, value in pairs if key == "v1"],
    }
