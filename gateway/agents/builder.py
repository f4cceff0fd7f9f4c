"""Agent spec -> SDK `Agent`, cached.

Two caches: the active version of (tenant, agent name), trusted for a few seconds (so a new
version or a deletion is seen within that bound), and the built `Agent` per
(tenant, name, version), which never goes stale because versions are immutable.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass

from agents import Agent, ModelSettings

from gateway.agents.tools import tools_for
from gateway.core.cache import TTLCache
from gateway.core.db import Database
from tenants.agent.repository import AgentRepository
from tenants.agent.spec import AgentSpec


@dataclass(frozen=True, slots=True)
class BuiltAgent:
    """A runnable agent: the SDK object plus what a run needs beside it."""

    agent: Agent[None]
    name: str
    version: int
    model: str
    max_turns: int
    max_tokens: int | None
    description: str


def build_agent(name: str, version: int, spec: AgentSpec, *, default_model: str) -> BuiltAgent:
    """Build the SDK Agent of one spec version."""
    settings = spec.model_settings
    model = spec.model or default_model
    agent: Agent[None] = Agent(
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
        tools=list(tools_for(spec.tools)),
    )
    return BuiltAgent(
        agent=agent,
        name=name,
        version=version,
        model=model,
        max_turns=spec.max_turns,
        max_tokens=settings.max_tokens,
        description=spec.description,
    )


class AgentCache:
    """Active-version look-ups (TTL) and built agents (LRU by immutable version)."""

    def __init__(self, *, ttl_s: float, max_size: int) -> None:
        # A missing agent is cached as version 0 so unknown names do not hit the DB each time.
        self._active: TTLCache[tuple[str, str], tuple[int, AgentSpec | None]] = TTLCache(
            ttl_s=ttl_s, max_size=max_size
        )
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

        async def load() -> tuple[int, AgentSpec | None]:
            async with db.session() as session:
                found = await AgentRepository(session).get_active(tenant_id, name)
            if found is None:
                return (0, None)
            return (found[1].version, AgentSpec.model_validate(found[1].spec))

        version, spec = await self._active.get_or_load((tenant_id, name), load)
        if spec is None:
            return None
        built_key = (tenant_id, name, version)
        built = self._built.get(built_key)
        if built is None:
            built = build_agent(name, version, spec, default_model=default_model)
            self._built[built_key] = built
            if len(self._built) > self._max_size:
                self._built.popitem(last=False)
        else:
            self._built.move_to_end(built_key)
        return built
