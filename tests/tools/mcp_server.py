"""A real MCP server (the `mcp` package's, Streamable HTTP) on loopback, in its own thread,
counting the connections opened, the tool lists and the tool calls it served."""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import anyio
import uvicorn
from mcp.server.mcpserver import MCPServer


@dataclass
class McpStats:
    url: str = ""
    sessions: int = 0
    calls: list[str] = field(default_factory=list)
    lists: int = 0
    redirects: int = 0
    fail_lists: bool = False
    """When set, `tools/list` is answered with a JSON-RPC error."""
    hang_lists: bool = False
    """When set, `tools/list` is never answered (the request waits until the server stops)."""
    in_flight: int = 0
    max_in_flight: int = 0
    """The most `slow_lookup` calls running at once."""


@contextmanager
def mcp_server(port: int | None = None, *, legacy: bool = False) -> Iterator[McpStats]:
    """Serve until the block ends (on `port`, e.g. to come back where a stopped one was).

    `legacy`: refuse the newer `server/discover`, so the client falls back to `initialize`
    and an `Mcp-Session-Id` session, which this server forgets when it stops."""
    stats = McpStats()
    server = MCPServer("crm")

    @server.tool()
    def find_customer(name: str) -> str:
        """Find a customer by name."""
        stats.calls.append("find_customer")
        return f"customer {name}: tier gold"

    @server.tool()
    def export_customers(count: int) -> str:
        """Every customer, one line each (long)."""
        stats.calls.append("export_customers")
        return "".join(f"customer {i}: tier gold\n" for i in range(count))

    @server.tool()
    async def slow_lookup(seconds: float) -> str:
        """Answer after `seconds`."""
        stats.calls.append("slow_lookup")
        stats.in_flight += 1
        stats.max_in_flight = max(stats.max_in_flight, stats.in_flight)
        try:
            await anyio.sleep(seconds)
        finally:
            stats.in_flight -= 1
        return "slow answer"

    @server.tool()
    def failing_lookup(name: str) -> str:
        """Always fails."""
        stats.calls.append("failing_lookup")
        raise ValueError(f"no customer called {name}")

    @server.tool()
    def delete_customer(name: str) -> str:
        """Delete a customer."""
        stats.calls.append("delete_customer")
        return "deleted"

    inner = server.streamable_http_app()

    async def app(scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await inner(scope, receive, send)
            return
        if scope["path"] == "/redirect":  # a same-origin redirect to the real endpoint
            stats.redirects += 1
            headers = [(b"location", b"/mcp"), (b"content-length", b"0")]
            await send({"type": "http.response.start", "status": 307, "headers": headers})
            await send({"type": "http.response.body", "body": b""})
            return
        chunks: list[bytes] = []
        while True:  # the whole body first: it decides whether the server answers at all
            message = await receive()
            if message.get("type") != "http.request":
                break
            chunks.append(message.get("body", b""))
            if not message.get("more_body"):
                break
        raw = b"".join(chunks)
        body = raw.replace(b" ", b"")
        # A connection opens with `initialize` (or `server/discover`, newer).
        if b'"method":"initialize"' in body or (
            b'"method":"server/discover"' in body and not legacy
        ):
            stats.sessions += 1
        refused: dict[str, Any] | None = None
        if legacy and b'"method":"server/discover"' in body:
            refused = {"code": -32601, "message": "Method not found"}
        if b'"method":"tools/list"' in body:
            stats.lists += 1
            if stats.fail_lists:
                refused = {"code": -32603, "message": "the tool list is broken"}
            while stats.hang_lists:
                await anyio.sleep(0.05)
        if refused is not None:
            request = json.loads(raw)
            answer = json.dumps({"jsonrpc": "2.0", "id": request["id"], "error": refused})
            headers = [(b"content-type", b"application/json")]
            await send({"type": "http.response.start", "status": 200, "headers": headers})
            await send({"type": "http.response.body", "body": answer.encode()})
            return
        replayed = False

        async def replay() -> Any:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": raw, "more_body": False}
            return await receive()

        await inner(scope, replay, send)

    if port is None:
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = sock.getsockname()[1]
    uv = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=uv.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not uv.started:
        assert time.monotonic() < deadline, "the MCP server did not start"
        time.sleep(0.05)
    stats.url = f"http://127.0.0.1:{port}/mcp"
    try:
        yield stats
    finally:
        uv.should_exit = True
        thread.join(timeout=10)
