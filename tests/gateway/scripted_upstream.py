"""A scripted OpenAI-compatible upstream over real HTTP, for the client conformance tests.

Each test queues the answers the upstream gives, in order (status, headers, a JSON body or
SSE frames, delays), and reads back what it received. It answers anything unscripted with
a 599, so a client that sends more attempts than the script allows is seen at once.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import orjson
from aiohttp import web


@dataclass
class Scripted:
    """One answer: a JSON body (`body`), raw bytes (`raw`) or SSE frames (`frames`)."""

    status: int = 200
    body: Any = None
    raw: bytes | None = None
    frames: list[Any] | None = None
    headers: dict[str, str] = field(default_factory=dict)
    delay_s: float = 0.0
    stall_after_frames: float = 0.0
    """With `frames`: after sending them, wait this long before ending the stream."""


@dataclass
class Received:
    path: str
    headers: dict[str, str]
    body: Any


class ScriptedUpstream:
    def __init__(self) -> None:
        self.script: list[Scripted] = []
        self.received: list[Received] = []
        self.base_url = ""

    def answer(self, *answers: Scripted) -> None:
        self.script.extend(answers)

    async def handle(self, request: web.Request) -> web.StreamResponse:
        raw = await request.read()
        self.received.append(Received(request.path, dict(request.headers), orjson.loads(raw)))
        if not self.script:
            return web.Response(status=599, text="unscripted")
        answer = self.script.pop(0)
        if answer.delay_s:
            await asyncio.sleep(answer.delay_s)
        if answer.frames is None:
            content = answer.raw if answer.raw is not None else orjson.dumps(answer.body)
            headers = {"content-type": "application/json"} | answer.headers
            return web.Response(status=answer.status, body=content, headers=headers)
        response = web.StreamResponse(
            status=answer.status, headers={"content-type": "text/event-stream"} | answer.headers
        )
        await response.prepare(request)
        for frame in answer.frames:
            if isinstance(frame, bytes):
                await response.write(frame)
            else:
                event = frame.get("type") if isinstance(frame, dict) else None
                prefix = f"event: {event}\n".encode() if event else b""
                await response.write(prefix + b"data: " + orjson.dumps(frame) + b"\n\n")
        if answer.stall_after_frames:
            await asyncio.sleep(answer.stall_after_frames)
        await response.write_eof()
        return response


@asynccontextmanager
async def scripted_upstream() -> AsyncIterator[ScriptedUpstream]:
    upstream = ScriptedUpstream()
    app = web.Application()
    app.router.add_post("/v1/{tail:.*}", upstream.handle)
    runner = web.AppRunner(app, handle_signals=False, shutdown_timeout=0.5)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    upstream.base_url = f"http://127.0.0.1:{port}/v1"
    try:
        yield upstream
    finally:
        await runner.cleanup()
