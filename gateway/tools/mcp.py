"""MCP servers as tools: a tenant's MCP server over Streamable HTTP, through the Agents SDK.

What is pooled, and how it is closed:

- One connection per (tenant, server URL, timeout_s) and replica (`McpServers`), shared by
  every agent and agent version of the tenant that names the server. It is an MCP session
  over one HTTP connection pool behind the egress guard, owned by a plain SDK server object.
  The SDK's transport lives in anyio task scopes that must be entered and left by one task,
  so each connection is held by its own task (`_Connection`), which connects, waits, and
  cleans up when asked. A connection that failed to open is retried by the next run, and so
  is one that a tool call found broken (the server went away or restarted).
- One `GatewayMcpServer` (the SDK's `MCPServerStreamableHttp`) per (agent version, server
  entry), built with the agent (built agents are cached per immutable version): it never
  connects, it runs on its tenant's connection's session (bound before the run for the entry
  agent, when the SDK lists its tools for a handoff target). Its tool list, cached by the SDK
  (`cache_tools_list=True`), is therefore cached per spec version, with its own filter.
- `McpServers.close()` (the lifespan's end) asks every holder to clean up and waits for them;
  the least recently used connections are closed the same way when the pool is over its bound.

A server that cannot be reached when a run needs it fails the run with 502
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
from collections.abc import Iterable
from contextvars import ContextVar
from typing import Any

import httpx2
import jsonschema
from agents import RunContextWrapper
from agents.exceptions import ModelBehaviorError, UserError
from agents.mcp import (
    MCPServerStreamableHttp,
    MCPServerStreamableHttpParams,
    create_static_tool_filter,
)
from jsonschema import Draft202012Validator
from mcp.shared.exceptions import MCPError
from mcp.types import CallToolResult, ContentBlock, TextContent
from mcp.types import Tool as MCPTool
from mcp_types import CONNECTION_CLOSED, INVALID_PARAMS, METHOD_NOT_FOUND, REQUEST_TIMEOUT

# The aiohttp transport the openai package ships: MCP's httpx2 client connects through the
# egress guard's connector with it.
from openai._vendor.httpx_aiohttp.transport import AiohttpTransport

from gateway.core.egress import EgressPolicy, guarded_session
from gateway.core.errors import GatewayError, UpstreamError
from observability.metrics import record_tool_call
from tenants.agent.json_schema import LOCAL_ONLY
from tenants.agent.tool_specs import McpToolSpec

logger = logging.getLogger("gateway.tools.mcp")

MAX_CONNECTIONS = 256
"""Pooled MCP connections per process; the least recently used one is closed beyond it."""


ConnectionKey = tuple[str, str, float]
"""(tenant id, server URL, timeout_s): what one pooled connection serves."""


RUN_BOUND: ContextVar[set[int] | None] = ContextVar("gateway_mcp_run_bound", default=None)
"""The entries (ids) the current run has bound to their connection: each run binds an entry
once, when it first needs it (`start_run`); later turns of the run keep that session."""


def start_run(entry_servers: list[Any]) -> None:
    """A run starts (in its task, before the SDK runs): its entry agent's servers were bound
    at admission; a handoff target's are bound when the run first lists its tools."""
    RUN_BOUND.set({id(server) for server in entry_servers})


def breaks_connection(error: BaseException) -> bool:
    """A call's failure that says the session is gone or unusable (the server went away,
    broke off, restarted and forgot the session: "Session not found"), not one of the call
    alone: a timeout (the client stops waiting; the session is fine), or the server's answer
    that this request's method or arguments are wrong."""
    if isinstance(error, TimeoutError):
        return False
    if isinstance(error, MCPError):
        return not timed_out(error) and error.code not in (METHOD_NOT_FOUND, INVALID_PARAMS)
    return True


class GatewayMcpServer(MCPServerStreamableHttp):
    """One agent version's entry for an MCP server: the SDK's Streamable HTTP server object,
    with its own tool list and filter, running on its tenant's pooled connection to the server
    (it never connects itself), and each call counted as an `mcp` tool call.

    A call whose failure says the session is gone marks the connection broken: the next run
    to need the server opens a new one. A call that timed out, one the server answered with
    an error, and one the SDK refuses before sending it (missing required arguments) leave
    the connection alone. Calls of concurrent runs share the session at once (the SDK would
    send one at a time per server object: the MCP session multiplexes requests by id).
    """

    max_output_bytes = 65_536
    """What the model may see of one call's result (`GATEWAY_TOOL_MAX_RESPONSE_BYTES`)."""
    pool: McpServers | None = None
    key: ConnectionKey = ("", "", 0.0)
    connection: _Connection | None = None
    """The pooled connection whose session this entry was last bound to."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._serialize_session_requests = False
        self._fetching: asyncio.Task[list[MCPTool]] | None = None
        """The list request in flight: runs that start together wait for its outcome (then
        read the cache, or fail at once with it), rather than each sending one."""
        self._validators: dict[str, tuple[Any, jsonschema.protocols.Validator]] = {}
        """Each approval tool's input schema (as last listed) and its validator."""

    def _get_needs_approval_for_tool(self, tool: MCPTool, agent: Any) -> Any:
        # A call whose arguments break the tool's input schema asks nobody (as for an HTTP
        # tool): it goes on at once, and the server's invalid-params answer, or the SDK's
        # refusal of missing arguments, is the model's `error:` output. A human was asked to
        # approve a call that could only fail.
        needed = super()._get_needs_approval_for_tool(tool, agent)
        if needed is not True:
            return needed
        validator = self._validators.get(tool.name)
        if validator is None or validator[0] is not tool.input_schema:
            schema = tool.input_schema
            try:
                kind = jsonschema.validators.validator_for(schema, default=Draft202012Validator)
                kind.check_schema(schema)
            except jsonschema.SchemaError:  # the server's own schema is broken: ask anyway
                return True
            validator = self._validators[tool.name] = (schema, kind(schema, registry=LOCAL_ONLY))
        checks = validator[1]

        async def approval_needed(
            context: RunContextWrapper[Any], arguments: dict[str, Any], call_id: str
        ) -> bool:
            try:
                return bool(checks.is_valid(arguments))
            except Exception:  # a schema it cannot apply (a remote `$ref`): ask anyway
                return True

        return approval_needed

    async def list_tools(
        self, run_context: RunContextWrapper[Any] | None = None, agent: Any = None
    ) -> list[MCPTool]:
        # The SDK lists an agent's tools when the agent takes a turn: a handoff target's
        # server is connected (or a clear 502) at the run's first turn in it.
        pool = self.pool
        if pool is not None:
            bound = RUN_BOUND.get()
            if self.session is None or (bound is not None and id(self) not in bound):
                await pool.bind(self)
                if bound is not None:
                    bound.add(id(self))
        return await self.listed(run_context, agent)

    async def listed(
        self, run_context: RunContextWrapper[Any] | None = None, agent: Any = None
    ) -> list[MCPTool]:
        """The server's tools (the SDK's cached list), or 502 `mcp_server_unavailable` when
        the server does not list them (an error answer, no answer within `timeout_s`)."""
        try:
            fetch = self._fetching
            if fetch is None:
                fetch = asyncio.get_running_loop().create_task(
                    super().list_tools(run_context, agent)
                )
                self._fetching = fetch
                fetch.add_done_callback(self._fetched)
                return await asyncio.shield(fetch)
            await asyncio.shield(fetch)
            return await super().list_tools(run_context, agent)  # the SDK's cache
        except (GatewayError, asyncio.CancelledError):
            raise
        except Exception as exc:
            if self.connection is not None and breaks_connection(exc):
                self.connection.broken = True
            logger.info("MCP server %s did not list its tools (%s)", self.name, type(exc).__name__)
            raise _unavailable(self.name, "it did not list its tools") from None

    def _fetched(self, fetch: asyncio.Task[list[MCPTool]]) -> None:
        self._fetching = None
        if not fetch.cancelled():
            fetch.exception()  # retrieved: its waiters may all have left

    async def call_tool(
        self, tool_name: str, arguments: dict[str, Any] | None, meta: dict[str, Any] | None = None
    ) -> CallToolResult:
        started = time.perf_counter()
        status = "error"
        connection = self.connection
        try:
            # Refused before anything is sent: an `error:` output, the connection is fine.
            self._validate_required_parameters(tool_name=tool_name, arguments=arguments)
            try:
                result = await super().call_tool(tool_name, arguments, meta)
            except Exception as exc:
                if connection is not None and breaks_connection(exc):
                    connection.broken = True
                raise
            status = "error" if result.is_error else "ok"
            return bounded(result, self.max_output_bytes)
        except TimeoutError:
            status = "timeout"
            raise
        except MCPError as exc:
            status = "timeout" if timed_out(exc) else "error"
            raise
        finally:
            record_tool_call(tool_name, "mcp", status, time.perf_counter() - started)


ERROR_DETAIL_CHARS = 500

CLIENT_CLOSED = ("Connection closed", "SSE stream ended", "SSE stream failed")
"""How the MCP client words a call the connection lost (code CONNECTION_CLOSED, which a
server may also answer, with its own message): the server went away mid-answer."""


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
        if cause.code == CONNECTION_CLOSED and cause.message.startswith(CLIENT_CLOSED):
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
    """One (tenant, server) connection, held open by its own task until `close()`."""

    def __init__(self, server: MCPServerStreamableHttp, timeout_s: float) -> None:
        self.server = server
        """The SDK object that owns the connection (agents' entries share its session)."""
        self.timeout_s = timeout_s
        self.broken = False
        """A call on it raised: the next run to need it opens a new one."""
        self._task: asyncio.Task[None] | None = None
        self._ready = asyncio.Event()
        self._closing = asyncio.Event()
        self._error: BaseException | None = None
        self._lock = asyncio.Lock()

    async def ensure(self, name: str) -> None:
        """Connected (connecting now if needed, again if a call found the connection
        broken), or UpstreamError naming the agent's entry `name` within `timeout_s`."""
        async with self._lock:
            if self.broken:
                self.broken = False
                await self._stop()
            if self._task is None or self._task.done():
                self._ready = asyncio.Event()
                self._error = None
                self._task = asyncio.get_running_loop().create_task(
                    self._hold(), name=f"mcp:{name}"
                )
        try:
            async with asyncio.timeout(self.timeout_s):
                await self._ready.wait()
        except TimeoutError:
            self._task.cancel()
            raise _unavailable(name, "it did not answer in time") from None
        if self._error is not None:
            raise _unavailable(
                name,
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


def servers_clash(names: str) -> UpstreamError:
    """Two of an agent's MCP servers offer a tool name (`names`: the name or names)."""
    return UpstreamError(
        f"Two of the agent's MCP servers offer the same tool name ({names}): give them "
        "allowed_tools that do not overlap.",
        code="tool_name_conflict",
    )


def server_clashes_with_tool(name: str) -> UpstreamError:
    """An MCP server offers a tool named as another tool of the agent."""
    return UpstreamError(
        f"The agent offers two tools named '{name}' (an MCP server's and another): give "
        "the MCP server allowed_tools without it, or rename the other tool.",
        code="tool_name_conflict",
    )


class McpServers:
    """The pool of MCP connections, one per (tenant, server URL, timeout_s) and app."""

    def __init__(self, policy: EgressPolicy, max_output_bytes: int = 65_536) -> None:
        self.policy = policy
        self.max_output_bytes = max_output_bytes
        self._connections: OrderedDict[ConnectionKey, _Connection] = OrderedDict()

    def _params(self, url: str, timeout_s: float) -> MCPServerStreamableHttpParams:
        policy = self.policy

        def client_factory(
            headers: dict[str, str] | None = None, timeout: Any = None, auth: Any = None
        ) -> httpx2.AsyncClient:
            return httpx2.AsyncClient(
                transport=AiohttpTransport(client=lambda: guarded_session(policy)),
                headers=headers,
                timeout=timeout if timeout is not None else timeout_s,
                auth=auth,
                follow_redirects=False,
                # The MCP SDK follows a redirect within the endpoint's origin whatever
                # `follow_redirects` says, up to `max_redirects`: none, as for every egress.
                max_redirects=0,
                trust_env=False,
            )

        return {"url": url, "timeout": timeout_s, "httpx_client_factory": client_factory}

    def build(self, tenant_id: str, spec: McpToolSpec) -> GatewayMcpServer:
        """The entry of one spec item (built with its agent version, cached with it): its own
        tool list (fetched once per entry, so per spec version) and filter; the connection is
        the tenant's for that server."""
        server = GatewayMcpServer(
            params=self._params(spec.url, spec.timeout_s),
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
        server.pool = self
        server.key = (tenant_id, spec.url, spec.timeout_s)
        return server

    async def bind(self, server: GatewayMcpServer) -> None:
        """`server` on its tenant's connection, opened now if needed (502
        `mcp_server_unavailable` naming it otherwise)."""
        key = server.key
        connection = self._connections.get(key)
        if connection is None:
            _, url, timeout_s = key
            holder = MCPServerStreamableHttp(
                params=self._params(url, timeout_s),
                name=server.name,
                client_session_timeout_seconds=timeout_s,
            )
            connection = self._connections[key] = _Connection(holder, timeout_s)
        else:
            self._connections.move_to_end(key)
        await connection.ensure(server.name)
        server.session = connection.server.session
        server.server_initialize_result = connection.server.server_initialize_result
        server.connection = connection
        await self._trim()

    async def ensure(self, servers: list[Any], tool_names: Iterable[str] = ()) -> None:
        """Every server of a run's entry agent connected and its tools listed (502
        `mcp_server_unavailable` otherwise), and no tool name offered twice (502
        `tool_name_conflict`: by two servers, or by a server and one of the agent's other
        tools, `tool_names`), before the run is admitted."""
        others = set(tool_names)
        offered: set[str] = set()
        for server in servers:
            if isinstance(server, GatewayMcpServer) and server.pool is self:
                await self.bind(server)
                for tool in await server.listed():
                    if tool.name in others:
                        raise server_clashes_with_tool(tool.name)
                    if tool.name in offered:
                        raise servers_clash(tool.name)
                    offered.add(tool.name)

    async def _trim(self) -> None:
        while len(self._connections) > MAX_CONNECTIONS:
            _, connection = self._connections.popitem(last=False)
            await connection.close()

    async def close(self) -> None:
        """Close every connection (the lifespan's end)."""
        connections = list(self._connections.values())
        self._connections.clear()
        await asyncio.gather(*(c.close() for c in connections), return_exceptions=True)
