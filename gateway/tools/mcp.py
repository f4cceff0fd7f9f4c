"""MCP servers as tools: a tenant's MCP server over Streamable HTTP, through the Agents SDK.

What is pooled, and how it is closed:

- One `GatewayMcpServer` (the SDK's `MCPServerStreamableHttp`) per (tenant, agent, version,
  server name): it is built with the agent (built agents are cached per immutable version),
  so its tool list, cached by the SDK (`cache_tools_list=True`), is cached per (tenant, server,
  spec version) and a new spec version gets a new server object (and a fresh list).
- Its connection (an MCP session over one HTTP connection pool behind the egress guard) is
  opened on the first run that needs it and then reused by every run of that agent version on
  this replica. The SDK's transport lives in anyio task scopes that must be entered and left by
  one task, so each connection is held by its own task (`_Connection`), which connects, waits,
  and cleans up when asked. A connection that failed to open is retried by the next run, and
  so is one that a tool call found broken (the server went away or restarted).
- `McpServers.close()` (the lifespan's end) asks every holder to clean up and waits for them;
  evicted agent versions' connections are closed the same way when the pool is over its bound.

A server that cannot be reached when a run starts fails the run with 502
`mcp_server_unavailable` naming it, within the server's `timeout_s`; a call that fails mid-run
(the server went away, an error result, a timeout) becomes an error tool output the model
sees, as for HTTP tools. A call's result is bounded like an HTTP tool's body: past
`GATEWAY_TOOL_MAX_RESPONSE_BYTES` (its text, and images as their base64 data) it is cut, with
a marker saying so, before the model sees it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import OrderedDict
from typing import Any

import httpx2
from agents import RunContextWrapper
from agents.exceptions import ModelBehaviorError, UserError
from agents.mcp import MCPServerStreamableHttp, create_static_tool_filter
from mcp.shared.exceptions import MCPError
from mcp.types import CallToolResult, ContentBlock, TextContent
from mcp_types import CONNECTION_CLOSED, REQUEST_TIMEOUT

# The aiohttp transport the openai package ships: MCP's httpx2 client connects through the
# egress guard's connector with it.
from openai._vendor.httpx_aiohttp.transport import AiohttpTransport

from gateway.core.egress import EgressPolicy, guarded_session
from gateway.core.errors import UpstreamError
from observability.metrics import record_tool_call
from tenants.agent.tool_specs import McpToolSpec

logger = logging.getLogger("gateway.tools.mcp")

MAX_CONNECTIONS = 256
"""Pooled MCP connections per process; the least recently used one is closed beyond it."""


class GatewayMcpServer(MCPServerStreamableHttp):
    """The SDK's Streamable HTTP MCP server, with each call counted as an `mcp` tool call.

    A call that raised (the server went away, restarted and forgot the session, timed out)
    marks the connection `broken`: the next run to need the server opens a new one.
    """

    broken = False
    max_output_bytes = 65_536
    """What the model may see of one call's result (`GATEWAY_TOOL_MAX_RESPONSE_BYTES`)."""

    async def call_tool(
        self, tool_name: str, arguments: dict[str, Any] | None, meta: dict[str, Any] | None = None
    ) -> CallToolResult:
        started = time.perf_counter()
        status = "error"
        try:
            result = await super().call_tool(tool_name, arguments, meta)
            status = "error" if result.is_error else "ok"
            return bounded(result, self.max_output_bytes)
        except TimeoutError:
            status = "timeout"
            self.broken = True
            raise
        except MCPError as exc:
            status = "timeout" if timed_out(exc) else "error"
            self.broken = True
            raise
        except Exception:
            self.broken = True
            raise
        finally:
            record_tool_call(tool_name, "mcp", status, time.perf_counter() - started)


ERROR_DETAIL_CHARS = 500


def timed_out(error: MCPError) -> bool:
    """The MCP client's own timeout (`REQUEST_TIMEOUT`, "Request 'tools/call' timed out"),
    not a server that answered an error with that code."""
    return error.code == REQUEST_TIMEOUT and error.message.endswith("timed out")


def failure_output(context: RunContextWrapper[Any], error: Exception) -> str:
    """What the model sees of an MCP call that failed: `error: …` saying why, as for an HTTP
    tool (the SDK's default says only "An error occurred while running the tool")."""
    if isinstance(error, ModelBehaviorError):  # arguments that are not a JSON object
        return f"error: invalid arguments: {error.message[:ERROR_DETAIL_CHARS]}"
    if isinstance(error, UserError):  # refused before the call: "missing required parameters"
        return f"error: {error.message[:ERROR_DETAIL_CHARS]}"
    cause = error if isinstance(error, MCPError) else error.__cause__
    if isinstance(cause, MCPError):
        if timed_out(cause):
            return "error: the MCP server did not answer within the tool's timeout_s"
        if cause.code == CONNECTION_CLOSED and cause.message == "Connection closed":
            return "error: the MCP server could not be reached or broke off the call"
        return f"error: the MCP server answered an error: {cause.message[:ERROR_DETAIL_CHARS]}"
    if isinstance(cause, TimeoutError):
        return "error: the MCP server did not answer within the tool's timeout_s"
    return "error: the MCP server could not be reached or broke off the call"


def _size(item: ContentBlock) -> int:
    if isinstance(item, TextContent):
        return len(item.text.encode())
    data = getattr(item, "data", None)  # an image or audio block: its base64 text
    return len(data) if isinstance(data, str) else len(item.model_dump_json())


def bounded(result: CallToolResult, limit: int) -> CallToolResult:
    """The result, or its first `limit` bytes of content and a marker (structured content,
    which the SDK would prefer to the blocks, dropped), as HTTP tools cut a long body."""
    sizes = [_size(item) for item in result.content]
    if sum(sizes) <= limit:
        return result
    kept: list[ContentBlock] = []
    room = limit
    for item, size in zip(result.content, sizes, strict=True):
        if size <= room:
            kept.append(item)
            room -= size
            continue
        if isinstance(item, TextContent) and room > 0:
            text = item.text.encode()[:room].decode("utf-8", errors="ignore")
            kept.append(TextContent(type="text", text=text))
        break
    marker = f"\n[truncated: the tool's output was longer than {limit} bytes]"
    kept.append(TextContent(type="text", text=marker))
    return result.model_copy(update={"content": kept, "structured_content": None})


class _Connection:
    """One server's connection, held open by its own task until `close()`."""

    def __init__(self, server: GatewayMcpServer, timeout_s: float) -> None:
        self.server = server
        self.timeout_s = timeout_s
        self._task: asyncio.Task[None] | None = None
        self._ready = asyncio.Event()
        self._closing = asyncio.Event()
        self._error: BaseException | None = None
        self._lock = asyncio.Lock()

    async def ensure(self) -> None:
        """Connected (connecting now if needed, again if a call found the connection
        broken), or UpstreamError within `timeout_s`."""
        async with self._lock:
            if self.server.broken:
                self.server.broken = False
                await self._stop()
            if self._task is None or self._task.done():
                self._ready = asyncio.Event()
                self._error = None
                self._task = asyncio.get_running_loop().create_task(
                    self._hold(), name=f"mcp:{self.server.name}"
                )
        try:
            async with asyncio.timeout(self.timeout_s):
                await self._ready.wait()
        except TimeoutError:
            self._task.cancel()
            raise _unavailable(self.server.name, "it did not answer in time") from None
        if self._error is not None:
            raise _unavailable(
                self.server.name,
                "it could not be reached, or did not answer as an MCP server (Streamable HTTP)",
            ) from None

    async def _hold(self) -> None:
        try:
            await self.server.connect()  # type: ignore[no-untyped-call]
        except Exception as exc:  # any failure to connect: the run gets a clear 502
            logger.info("MCP server %s unreachable (%s)", self.server.name, type(exc).__name__)
            self._error = exc
            self._ready.set()
            return
        self._ready.set()
        try:
            await self._closing.wait()
        finally:
            with contextlib.suppress(Exception):
                await self.server.cleanup()  # type: ignore[no-untyped-call]

    async def close(self) -> None:
        await self._stop()

    async def _stop(self) -> None:
        """The holder cleans up and ends (at most 5 s); a later `ensure` connects anew."""
        self._closing.set()
        if self._task is not None:
            with contextlib.suppress(Exception, asyncio.CancelledError):
                async with asyncio.timeout(5):
                    await self._task
        self._closing = asyncio.Event()


def _unavailable(name: str, why: str) -> UpstreamError:
    return UpstreamError(
        f"The MCP server '{name}' is unavailable: {why}.", code="mcp_server_unavailable"
    )


class McpServers:
    """The pool of MCP servers and their connections, one per app."""

    def __init__(self, policy: EgressPolicy, max_output_bytes: int = 65_536) -> None:
        self.policy = policy
        self.max_output_bytes = max_output_bytes
        self._connections: OrderedDict[tuple[str, str, int, str], _Connection] = OrderedDict()
        self._keys: dict[int, tuple[str, str, int, str]] = {}

    def build(
        self, tenant_id: str, agent: str, version: int, spec: McpToolSpec
    ) -> GatewayMcpServer:
        """The server object of one spec entry (built with its agent version, cached with it)."""
        key = (tenant_id, agent, version, spec.name)
        existing = self._connections.get(key)
        if existing is not None:
            return existing.server
        policy = self.policy

        def client_factory(
            headers: dict[str, str] | None = None, timeout: Any = None, auth: Any = None
        ) -> httpx2.AsyncClient:
            return httpx2.AsyncClient(
                transport=AiohttpTransport(client=lambda: guarded_session(policy)),
                headers=headers,
                timeout=timeout if timeout is not None else spec.timeout_s,
                auth=auth,
                follow_redirects=False,
                # The MCP SDK follows a redirect within the endpoint's origin whatever
                # `follow_redirects` says, up to `max_redirects`: none, as for every egress.
                max_redirects=0,
                trust_env=False,
            )

        server = GatewayMcpServer(
            params={
                "url": spec.url,
                "timeout": spec.timeout_s,
                "httpx_client_factory": client_factory,
            },
            cache_tools_list=True,
            name=spec.name,
            client_session_timeout_seconds=spec.timeout_s,
            tool_filter=(
                None
                if spec.allowed_tools is None
                else create_static_tool_filter(allowed_tool_names=spec.allowed_tools)
            ),
            require_approval="always" if spec.requires_approval else "never",
        )
        server.max_output_bytes = self.max_output_bytes
        self._connections[key] = _Connection(server, spec.timeout_s)
        self._keys[id(server)] = key
        return server

    async def ensure(self, servers: list[Any]) -> None:
        """Every server of a run connected (502 `mcp_server_unavailable` otherwise)."""
        for server in servers:
            connection = self._find(server)
            if connection is not None:
                await connection.ensure()
        await self._trim()

    def _find(self, server: Any) -> _Connection | None:
        key = self._keys.get(id(server))
        connection = None if key is None else self._connections.get(key)
        if connection is None or connection.server is not server:
            return None
        self._connections.move_to_end(key)  # type: ignore[arg-type]
        return connection

    async def _trim(self) -> None:
        while len(self._connections) > MAX_CONNECTIONS:
            _, connection = self._connections.popitem(last=False)
            self._keys.pop(id(connection.server), None)
            await connection.close()

    async def close(self) -> None:
        """Close every connection (the lifespan's end)."""
        connections = list(self._connections.values())
        self._connections.clear()
        self._keys.clear()
        await asyncio.gather(*(c.close() for c in connections), return_exceptions=True)
