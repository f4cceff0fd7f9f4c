"""`HeadLimitedHttpToolsProtocol` fed bytes directly, in chosen reads: the head cap holds
however the kernel splits the request (a loaded host reads a whole request at once)."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from uvicorn.config import Config
from uvicorn.server import ServerState

from gateway.core.http_protocol import HeadLimitedHttpToolsProtocol

CAP = 64 * 1024


class Transport(asyncio.Transport):
    """What the protocol writes, whether it half-closed and closed."""

    def __init__(self) -> None:
        super().__init__()
        self.written = b""
        self.eof = False
        self.closed = False

    def write(self, data: Any) -> None:
        self.written += bytes(data)

    def can_write_eof(self) -> bool:
        return True

    def write_eof(self) -> None:
        self.eof = True

    def close(self) -> None:
        self.closed = True

    def is_closing(self) -> bool:
        return self.closed

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return {"peername": ("127.0.0.1", 5000), "sockname": ("127.0.0.1", 8000)}.get(name, default)

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass

    def set_write_buffer_limits(self, high: int | None = None, low: int | None = None) -> None:
        pass

    def get_write_buffer_size(self) -> int:
        return 0


def head(padding: int) -> bytes:
    return (
        b"POST /v1/agents/a/runs HTTP/1.1\r\nHost: gateway.test\r\nContent-Length: 2\r\n"
        b"X-Padding: " + b"p" * padding + b"\r\n\r\n"
    )


async def feed(reads: list[bytes]) -> tuple[Transport, list[dict[str, Any]]]:
    """Feed `reads` to a fresh protocol; the transport and the requests the app received."""
    seen: list[dict[str, Any]] = []

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        seen.append(scope)
        await send({"type": "http.response.start", "status": 204, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    config = Config(app=app, lifespan="off", log_level="warning")
    config.load()
    loop = asyncio.get_running_loop()
    protocol = HeadLimitedHttpToolsProtocol(config, ServerState(), {}, loop)
    protocol.max_head_bytes = CAP
    transport = Transport()
    protocol.connection_made(transport)
    for data in reads:
        protocol.data_received(data)
    await asyncio.sleep(0.05)  # let the app's task run, if one was started
    return transport, seen


@pytest.mark.parametrize("split", ["one read", "byte cut at the cap", "every 4 KiB"])
async def test_a_head_over_the_cap_is_431_however_it_is_read(split: str) -> None:
    request = head(CAP) + b"{}"
    if split == "one read":
        reads = [request]
    elif split == "byte cut at the cap":
        reads = [request[:CAP], request[CAP:]]
    else:
        reads = [request[i : i + 4096] for i in range(0, len(request), 4096)]
    transport, seen = await feed(reads)
    assert transport.written.startswith(b"HTTP/1.1 431 ")
    assert b'"headers_too_large"' in transport.written
    assert seen == []  # the app never saw it
    assert transport.eof  # the answer then a FIN; the close lingers for the client's EOF


@pytest.mark.parametrize("split", ["one read", "terminator across reads"])
async def test_a_head_just_under_the_cap_is_served(split: str) -> None:
    request = head(CAP - 200) + b"{}"
    assert len(request.partition(b"\r\n\r\n")[0]) + 4 <= CAP
    end = request.index(b"\r\n\r\n") + 2
    reads = [request] if split == "one read" else [request[:end], request[end:]]
    transport, seen = await feed(reads)
    assert [scope["path"] for scope in seen] == ["/v1/agents/a/runs"]
    assert transport.written.startswith(b"HTTP/1.1 204 ")
