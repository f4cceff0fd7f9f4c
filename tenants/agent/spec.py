"""The agent spec (SPEC §9): what an operator PUTs and what the runtime builds an Agent from.

Validation happens here, at PUT time: unknown built-in tools, bad names and out-of-range
settings are 422 before anything is stored. Features not built yet (http tools, handoffs,
output schemas, guardrails) are refused as unknown fields rather than silently ignored.
"""

from __future__ import annotations

import re
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

from gateway.core.catalog import BUILTIN_TOOLS

AGENT_NAME_PATTERN = r"^[a-z0-9_-]{1,64}$"
AGENT_NAME_RE = re.compile(AGENT_NAME_PATTERN)


class ModelSettingsSpec(BaseModel):
    """Sampling settings passed to every model call of the agent."""

    model_config = ConfigDict(extra="forbid")

    temperature: Annotated[float, Field(ge=0, le=2)] | None = None
    top_p: Annotated[float, Field(ge=0, le=1)] | None = None
    max_tokens: Annotated[int, Field(ge=1, le=128_000)] | None = None
    frequency_penalty: Annotated[float, Field(ge=-2, le=2)] | None = None
    presence_penalty: Annotated[float, Field(ge=-2, le=2)] | None = None
    parallel_tool_calls: bool | None = None


class AgentSpec(BaseModel):
    """One version of an agent: instructions, model, settings, tools, turn limit."""

    model_config = ConfigDict(extra="forbid")

    description: Annotated[str, Field(max_length=2_000)] = ""
    instructions: Annotated[str, Field(max_length=100_000)] = ""
    model: Annotated[str, Field(min_length=1, max_length=128)] | None = None
    model_settings: ModelSettingsSpec = Field(default_factory=ModelSettingsSpec)
    tools: Annotated[list[str], Field(max_length=32)] = Field(default_factory=list)
    max_turns: Annotated[int, Field(ge=1, le=50)] = 10

    @field_validator("tools")
    @classmethod
    def _known_tools(cls, tools: list[str]) -> list[str]:
        unknown = [name for name in tools if name not in BUILTIN_TOOLS]
        if unknown:
            known = ", ".join(sorted(BUILTIN_TOOLS))
            raise ValueError(f"unknown tool(s) {', '.join(unknown)}; built-in tools: {known}")
        if len(set(tools)) != len(tools):
            raise ValueError("a tool is listed twice")
        return tools

    def stored(self) -> dict[str, Any]:
        """The JSON document kept in `agent_versions.spec`."""
        return self.model_dump(mode="json")
