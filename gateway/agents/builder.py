"""Agent spec -> SDK `Agent`, cached.

Two caches: the active version of (tenant, agent name), trusted for a few seconds (so a new
version or a deletion is seen within that bound), and the built `Agent` per
(tenant, name, version), which never goes stale because versions are immutable.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

from agents import Agent, ModelSettings

from gateway.agents.tools import TOOLS
from gateway.core.cache import TTLCache
from gateway.core.db import Database
from gateway.core.errors import PermissionDeniedError
from gateway.tools.http import HttpTools
from tenants.agent.repository import AgentRepository
from tenants.agent.spec import AgentSpec
from tenants.agent.tool_specs import HttpToolSpec


@dataclass(frozen=True, slots=True)
class BuiltAgent:
    """A runnable agent: the SDK object plus what a run needs beside it."""

    agent: Agent[Any]
    name: str
    version: int
    model: str
    max_turns: int
    max_tokens: int | None
    description: str
    upstream: str | None = None
    """The tenant upstream the agent runs on (None: the deployment's)."""
    needs_approval: bool = False
    """A tool of this agent pauses the run for a human decision (`requires_approval`)."""


def _tools(spec: AgentSpec, http_tools: HttpTools | None) -> list[Any]:
    """The SDK tools of a spec, in the spec's order."""
    tools: list[Any] = []
    for entry in spec.tools:
        if isinstance(entry, str):
            tools.append(TOOLS[entry])
        elif isinstance(entry, HttpToolSpec):
            if http_tools is None:
                raise RuntimeError("HTTP tools need the HttpTools of the app")
            tools.append(http_tools.build(entry))
    return tools


def build_agent(
    name: str,
    version: int,
    spec: AgentSpec,
    *,
    default_model: str,
    http_tools: HttpTools | None = None,
) -> BuiltAgent:
    """Build the SDK Agent of one spec version."""
    settings = spec.model_settings
    model = spec.model or default_model
    agent: Agent[Any] = Agent(
        name=name,
        instructions=spec.instructions or None,
        model=model,
        model_settings=ModelSettings(
            temperature=settings.temperature,
            top_p=settings.top_p,
            max_tokens=settings.max_tokens,
            frequency_penalty=settings.frequency_penalty,
            presence_penalty=settings.presence_penalty,
            parallel_tool_calls=settings.parallel_tool_calls,
            # Streamed Chat Completions report no usage without it; usage must be exact.
            include_usage=True,
        ),
        tools=_tools(spec, http_tools),
    )
    return BuiltAgent(
        agent=agent,
        name=name,
        version=version,
        model=model,
        max_turns=spec.max_turns,
        max_tokens=settings.max_tokens,
        description=spec.description,
        upstream=spec.upstream,
        needs_approval=spec.needs_approval(),
    )


_Active = tuple[int, AgentSpec | None, list[str] | None]
"""(active version, its spec, the tenant's allowed models); version 0: no such agent."""


class AgentCache:
    """Active-version look-ups (TTL) and built agents (LRU by immutable version)."""

    def __init__(self, *, ttl_s: float, max_size: int, http_tools: HttpTools | None = None) -> None:
        self._http_tools = http_tools
        # A missing agent is cached as version 0 so unknown names do not hit the DB each time.
        # The tenant's allowed models ride along (dropped with the tenant's entries).
        self._active: TTLCache[tuple[str, str], _Active] = TTLCache(ttl_s=ttl_s, max_size=max_size)
        self._built: OrderedDict[tuple[str, str, int], BuiltAgent] = OrderedDict()
        self._max_size = max_size

    def invalidate_tenant(self, tenant_id: str) -> None:
        """Forget which versions a tenant's agents have active (built agents stay: immutable)."""
        self._active.discard_where(lambda key: key[0] == tenant_id)

    def clear(self) -> None:
        """Forget every active-version look-up."""
        self._active.clear()

    async def get(
        self, db: Database, tenant_id: str, name: str, *, default_model: str
    ) -> BuiltAgent | None:
        """The runnable active version of a tenant's agent, or None if it has none."""

        async def load() -> _Active:
            async with db.session() as session:
                found = await AgentRepository(session).get_active_with_models(tenant_id, name)
            if found is None:
                return (0, None, None)
            version_row, allowed = found
            return (version_row.version, AgentSpec.model_validate(version_row.spec), allowed)

        version, spec, allowed = await self._active.get_or_load((tenant_id, name), load)
        if spec is None:
            return None
        built_key = (tenant_id, name, version)
        built = self._built.get(built_key)
        if built is None:
            built = build_agent(
                name, version, spec, default_model=default_model, http_tools=self._http_tools
            )
            self._built[built_key] = built
            if len(self._built) > self._max_size:
                self._built.popitem(last=False)
        else:
            self._built.move_to_end(built_key)
        if allowed is not None and built.model not in allowed:
            raise PermissionDeniedError(
                f"Agent '{name}' uses model '{built.model}', which this tenant may not use.",
                code="model_not_allowed",
            )
        return built
