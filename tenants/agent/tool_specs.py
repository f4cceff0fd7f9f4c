"""Tenant tools in an agent spec: HTTP tools (signed webhooks) and MCP servers.

Validated when the spec is PUT: a tool name is a function name the model can call, unique in
the spec and distinct from the built-ins; `parameters` is a JSON Schema object (checked with
`jsonschema` against its own meta-schema, its `$ref`s resolving within it:
`tenants.agent.json_schema`); the URL's scheme and (if literal) address pass the egress
guard in `tenants.agent.checks`, which needs the deployment's settings.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

import orjson
from pydantic import BaseModel, ConfigDict, Discriminator, Field, Tag, field_validator

from gateway.core.catalog import BUILTIN_TOOLS
from gateway.core.json_types import JsonBool, JsonNumber, UniqueItems
from gateway.core.text import Text, Url
from gateway.core.unions import TEXT
from tenants.agent.json_schema import check_json_schema

TOOL_NAME_PATTERN = r"^[A-Za-z0-9_-]{1,64}$"
MAX_SCHEMA_BYTES = 16_384
MAX_URL_CHARS = 2_048

ToolName = Annotated[str, Field(pattern=TOOL_NAME_PATTERN)]
ToolUrl = Annotated[Url, Field(min_length=8, max_length=MAX_URL_CHARS)]


class HttpToolSpec(BaseModel):
    """A tool the gateway calls as `POST url` with a signed JSON body."""

    model_config = ConfigDict(extra="forbid")

    type: Literal["http"]
    name: ToolName
    description: Annotated[Text, Field(max_length=1_024)] = ""
    url: ToolUrl
    parameters: dict[str, Any] = Field(
        default_factory=lambda: {"type": "object", "properties": {}},
        description="JSON Schema (an object schema) of the arguments the model passes.",
    )
    timeout_s: Annotated[float, Field(gt=0, le=60), JsonNumber] = 10
    requires_approval: JsonBool = False

    @field_validator("parameters")
    @classmethod
    def _json_schema_object(cls, schema: dict[str, Any]) -> dict[str, Any]:
        if len(orjson.dumps(schema)) > MAX_SCHEMA_BYTES:
            raise ValueError(f"the schema is larger than {MAX_SCHEMA_BYTES} bytes")
        if schema.get("type") != "object":
            raise ValueError('must be a JSON Schema object schema ({"type": "object", …})')
        check_json_schema(schema)
        return schema


class McpToolSpec(BaseModel):
    """A tenant's MCP server (Streamable HTTP) whose tools the agent may call."""

    model_config = ConfigDict(extra="forbid")

    type: Literal["mcp"]
    name: ToolName
    url: ToolUrl
    allowed_tools: Annotated[list[ToolName], Field(max_length=128), UniqueItems] | None = None
    """The server's tools offered to the model (None: all of them)."""
    requires_approval: JsonBool = False
    timeout_s: Annotated[float, Field(gt=0, le=60), JsonNumber] = 10


_HTTP, _MCP = "<http>", "<mcp>"


def tool_kind(value: Any) -> str | None:
    """The discriminator of a tools entry: a string (a built-in's name) or a tenant tool by its
    `type`; None (a 422 naming the accepted forms) for anything else."""
    if isinstance(value, str):
        return TEXT
    kind = value.get("type") if isinstance(value, dict) else getattr(value, "type", None)
    return {"http": _HTTP, "mcp": _MCP}.get(kind) if isinstance(kind, str) else None


# Tagged, so an error names the form that was sent: `tools.0.timeout_s: ... <= 60`, not
# `tools.0: Input should be a valid string` for an HTTP tool object.
# A string names a built-in tool (`check_tool_list` refuses any other): the schema says so.
ToolEntry = Annotated[
    Annotated[str, Field(json_schema_extra={"enum": sorted(BUILTIN_TOOLS)}), Tag(TEXT)]
    | Annotated[HttpToolSpec, Tag(_HTTP)]
    | Annotated[McpToolSpec, Tag(_MCP)],
    Discriminator(
        tool_kind,
        custom_error_type="invalid_tool",
        custom_error_message='a built-in tool name, or an object with "type": "http" or "mcp"',
    ),
]


def check_tool_list(tools: list[ToolEntry]) -> list[ToolEntry]:
    """Built-in names must exist; every name (built-in or tenant tool) appears once; a tenant
    tool may not take a built-in's name."""
    unknown = [name for name in tools if isinstance(name, str) and name not in BUILTIN_TOOLS]
    if unknown:
        known = ", ".join(sorted(BUILTIN_TOOLS))
        named = ", ".join(orjson.dumps(name).decode() for name in unknown)
        raise ValueError(f"unknown tool(s) {named}; built-in tools: {known}")
    names = [tool if isinstance(tool, str) else tool.name for tool in tools]
    clashing = sorted(
        tool.name for tool in tools if not isinstance(tool, str) and tool.name in BUILTIN_TOOLS
    )
    if clashing:
        raise ValueError(f"tool name(s) {', '.join(clashing)} are taken by built-in tools")
    if len(set(names)) != len(names):
        twice = sorted({name for name in names if names.count(name) > 1})
        raise ValueError(f"tool name(s) {', '.join(twice)} listed twice")
    _check_mcp_tool_names(tools)
    return tools


def _check_mcp_tool_names(tools: list[ToolEntry]) -> None:
    """The tool names the model is offered must be unique: an MCP entry may not allow a tool
    name that another entry allows or a built-in or HTTP tool has, and two entries for one
    server URL clash unless both list disjoint allowed_tools (an unfiltered one offers all)."""
    offered = {tool if isinstance(tool, str) else tool.name for tool in tools}
    servers = [tool for tool in tools if isinstance(tool, McpToolSpec)]
    offered -= {server.name for server in servers}
    for index, server in enumerate(servers):
        for other in servers[:index]:
            if other.url == server.url and (
                other.allowed_tools is None or server.allowed_tools is None
            ):
                raise ValueError(
                    f"MCP entries {other.name!r} and {server.name!r} both offer the tools of "
                    f"{server.url}: list disjoint allowed_tools in each"
                )
        clash = sorted(offered.intersection(server.allowed_tools or ()))
        if clash:
            raise ValueError(
                f"MCP server {server.name!r} would offer tool name(s) {', '.join(clash)}, "
                "already offered by another tool of the agent"
            )
        offered.update(server.allowed_tools or ())
