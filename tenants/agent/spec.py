"""The agent spec: what an operator PUTs and what the runtime builds an Agent from.

Validation happens here, at PUT time: unknown built-in tools, bad names, bad tool schemas,
out-of-range settings, invalid RE2 patterns and output schemas that cannot be made strict are
422 before anything is stored (`tenants.agent.tool_specs`, `tenants.agent.composition`);
checks that need the database or the deployment's settings, such as URLs, upstreams and
handoff targets, are in `tenants.agent.checks` and the service. Features not built yet are
refused as unknown fields rather than silently ignored.
"""

from __future__ import annotations

import re
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, StrictBool, ValidationInfo, field_validator

from gateway.core.json_types import JsonInteger, JsonNumber
from gateway.core.stored import STORED
from gateway.core.text import Label, Text
from tenants.agent.composition import (
    AGENT_NAME_PATTERN,
    GuardrailsSpec,
    HandoffEntry,
    handoff_target,
    handoff_tool_name,
    strict_output_schema,
)
from tenants.agent.tool_specs import HttpToolSpec, McpToolSpec, ToolEntry, check_tool_list

__all__ = ["AGENT_NAME_PATTERN", "AGENT_NAME_RE", "AgentSpec", "ModelSettingsSpec", "stored_spec"]

AGENT_NAME_RE = re.compile(AGENT_NAME_PATTERN)


MAX_TOOL_NAME = 64
"""The longest function name the OpenAI APIs accept (`^[a-zA-Z0-9_-]{1,64}$`)."""


def _offered_names(tools: list[ToolEntry]) -> list[str]:
    """Every tool name the spec's tools offer that is known at PUT (an MCP entry: its
    allowed_tools)."""
    names: list[str] = []
    for tool in tools:
        if isinstance(tool, str):
            names.append(tool)
        elif isinstance(tool, McpToolSpec):
            names.extend(tool.allowed_tools or ())
        else:
            names.append(tool.name)
    return names


class ModelSettingsSpec(BaseModel):
    """Sampling settings passed to every model call of the agent."""

    model_config = ConfigDict(extra="forbid")

    temperature: Annotated[float, Field(ge=0, le=2), JsonNumber] | None = None
    top_p: Annotated[float, Field(ge=0, le=1), JsonNumber] | None = None
    max_tokens: Annotated[int, Field(ge=1, le=128_000), JsonInteger] | None = None
    frequency_penalty: Annotated[float, Field(ge=-2, le=2), JsonNumber] | None = None
    presence_penalty: Annotated[float, Field(ge=-2, le=2), JsonNumber] | None = None
    parallel_tool_calls: StrictBool | None = None


class AgentSpec(BaseModel):
    """One version of an agent: instructions, model, settings, tools, turn limit."""

    model_config = ConfigDict(extra="forbid")

    description: Annotated[Text, Field(max_length=2_000)] = ""
    instructions: Annotated[Text, Field(max_length=100_000)] = ""
    model: Annotated[Label, Field(min_length=1, max_length=128)] | None = None
    upstream: Annotated[str, Field(pattern=r"^[a-z0-9_-]{1,64}$")] | None = None
    """The tenant upstream the agent runs on (None: the deployment's)."""
    model_settings: ModelSettingsSpec = Field(default_factory=ModelSettingsSpec)
    # Each name once (checked below, with what the schema cannot say: a built-in and a tool
    # object of the same name, handoff names differing only by '-'/'_').
    tools: Annotated[
        list[ToolEntry], Field(max_length=32, json_schema_extra={"uniqueItems": True})
    ] = Field(default_factory=list)
    max_turns: Annotated[int, Field(ge=1, le=50), JsonInteger] = 10
    handoffs: Annotated[
        list[HandoffEntry], Field(max_length=16, json_schema_extra={"uniqueItems": True})
    ] = Field(default_factory=list)
    """Other agents of the tenant this one may pass the conversation to."""
    guardrails: GuardrailsSpec | None = None
    output_schema: dict[str, Any] | None = None
    """A JSON Schema object: the agent answers with JSON following it."""

    @field_validator("tools")
    @classmethod
    def _known_tools(cls, tools: list[ToolEntry]) -> list[ToolEntry]:
        return check_tool_list(tools)

    def builtin_tools(self) -> list[str]:
        """The names of the built-in tools listed."""
        return [tool for tool in self.tools if isinstance(tool, str)]

    def http_tools(self) -> list[HttpToolSpec]:
        return [tool for tool in self.tools if isinstance(tool, HttpToolSpec)]

    def mcp_tools(self) -> list[McpToolSpec]:
        return [tool for tool in self.tools if isinstance(tool, McpToolSpec)]

    def needs_approval(self) -> bool:
        """True when a tool of this spec pauses the run for a human decision."""
        return any(not isinstance(tool, str) and tool.requires_approval for tool in self.tools)

    @field_validator("handoffs")
    @classmethod
    def _distinct_handoffs(cls, handoffs: list[Any], info: ValidationInfo) -> list[Any]:
        tools = [handoff_tool_name(handoff_target(entry)) for entry in handoffs]
        if len(set(tools)) != len(tools):
            raise ValueError("an agent is listed twice (names differing only by '-'/'_' clash)")
        too_long = [name for name in tools if len(name) > MAX_TOOL_NAME]
        if too_long:
            raise ValueError(
                f"the handoff tool {too_long[0]} is longer than {MAX_TOOL_NAME} characters, "
                "which model APIs refuse: a handoff target's name is at most "
                f"{MAX_TOOL_NAME - len(handoff_tool_name(''))} characters"
            )
        offered = set(_offered_names(info.data.get("tools") or []))
        clash = sorted(offered.intersection(tools))
        if clash:
            raise ValueError(
                f"the handoff tool name(s) {', '.join(clash)} are already offered by a tool "
                "of the agent"
            )
        return handoffs

    @field_validator("output_schema")
    @classmethod
    def _strict_output_schema(cls, schema: dict[str, Any] | None) -> dict[str, Any] | None:
        if schema is not None:
            strict_output_schema(schema)
        return schema

    def handoff_targets(self) -> list[str]:
        """The agent names this spec hands off to."""
        return [handoff_target(entry) for entry in self.handoffs]

    def stored(self) -> dict[str, Any]:
        """The JSON document kept in `agent_versions.spec`."""
        return self.model_dump(mode="json")


def stored_spec(data: Any) -> AgentSpec:
    """A stored version's spec read back: rules added to the PUT since it was stored (a
    duplicate `allowed_tools` entry, a space in a URL) do not stop it from loading, so an
    upgrade never turns a working agent into a 500. Activation checks it as a PUT does."""
    return AgentSpec.model_validate(data, context=STORED)
