"""A real MCP server (the `mcp` package's, Streamable HTTP) on loopback, in its own thread,
counting the connections opened, the tool lists and the tool calls it served."""

from __future__ import annotations

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


@contextmanager
def mcp_server(port: int | None = None) -> Iterator[McpStats]:
    """Serve until the block ends (on `port`, e.g. to come back where a stopped one was)."""
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
        await anyio.sleep(seconds)
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

        async def recording_receive() -> Any:
            message = await receive()
            if message.get("type") == "http.request":
                chunks.append(message.get("body", b""))
                if not message.get("more_body"):
                    body = b"".join(chunks).replace(b" ", b"")
                    chunks.clear()
                    # A connection opens with `initialize` (or `server/discover`, newer).
                    if b'"method":"initialize"' in body or b'"method":"server/discover"' in body:
                        stats.sessions += 1
                    if b'"method":"tools/list"' in body:
                        stats.lists += 1
            return message

        await inner(scope, recording_receive, send)

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
