"""Agent spec -> SDK `Agent` graph, cached.

Two caches: the active version of (tenant, agent name), trusted for a few seconds (so a new
version or a deletion is seen within that bound, and at once through the invalidation
pub/sub), and the built graph per (tenant, entry agent, versions of every agent reachable
from it through handoffs). Versions are immutable, so a built graph never goes stale: a new
active version of any agent in it changes the key, and the next run builds a new graph.
Handoff cycles (triage <-> billing) are fine: every node is built once per graph and the
run's `max_turns` bounds the ping-pong.
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any

from agents import Agent, ModelSettings, handoff

from gateway.agents.guardrails import (
    InputChecks,
    PatternSet,
    classifier_guardrail,
    patterns_or_none,
)
from gateway.agents.output import JsonSchemaOutput
from gateway.agents.sdk_cache import seal
from gateway.agents.tools import TOOLS
from gateway.core.cache import TTLCache
from gateway.core.db import Database
from gateway.core.errors import PermissionDeniedError
from gateway.tools.http import HttpTools
from gateway.tools.mcp import McpServers
from gateway.tools.mcp import failure_output as mcp_failure_output
from tenants.agent.composition import (
    MAX_GRAPH_AGENTS,
    handoff_target,
    handoff_tool_name,
    strict_output_schema,
)
from tenants.agent.repository import AgentRepository
from tenants.agent.spec import AgentSpec, stored_spec
from tenants.agent.tool_specs import HttpToolSpec

logger = logging.getLogger("gateway.agents")

"""Agents reachable from one entry agent through handoffs (more are left out, logged)."""

Versions = tuple[tuple[str, int], ...]


@dataclass(frozen=True, slots=True)
class BuiltAgent:
    """A runnable agent: the SDK object (with its handoff targets) plus what a run needs."""

    agent: Agent[Any]
    name: str
    version: int
    model: str
    max_turns: int
    max_tokens: int | None
    description: str
    upstream: str | None = None
    """The tenant upstream the run goes to (None: the deployment's); a handoff target runs on
    the entry agent's upstream."""
    models: tuple[str, ...] = ()
    """Every model the run may call: its agents' and the input classifier's."""
    needs_approval: bool = False
    """A tool of an agent of the graph pauses the run for a human decision."""
    input_checks: InputChecks | None = None
    """`input.max_chars` / `input.blocked_patterns`, checked by the gateway before the run."""
    output_checks: dict[str, PatternSet] = field(default_factory=dict)
    """`output.blocked_patterns` of each agent of the graph that has some, by agent name."""
    versions: Versions = ()
    """(name, version) of every agent in the graph: the cache key."""
    has_mcp: bool = False
    """An agent of the graph has an MCP server (each run tracks which it has connected)."""


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


def _sdk_agent(
    name: str,
    spec: AgentSpec,
    *,
    default_model: str,
    http_tools: HttpTools | None,
    mcp: McpServers | None = None,
    tenant_id: str = "",
) -> Agent[Any]:
    """One node of a graph, without its handoffs (set once every node exists)."""
    settings = spec.model_settings
    output_type = None
    if spec.output_schema is not None:
        output_type = JsonSchemaOutput(strict_output_schema(spec.output_schema))
    return Agent(
        name=name,
        instructions=spec.instructions or None,
        handoff_description=spec.description or None,
        model=spec.model or default_model,
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
        mcp_servers=(
            [mcp.build(tenant_id, entry) for entry in spec.mcp_tools()] if mcp is not None else []
        ),
        mcp_config={"failure_error_function": mcp_failure_output},
        output_type=output_type,
    )


def build_graph(
    entry: str,
    nodes: dict[str, tuple[int, AgentSpec]],
    *,
    default_model: str,
    http_tools: HttpTools | None = None,
    mcp: McpServers | None = None,
    tenant_id: str = "",
) -> BuiltAgent:
    """Build the SDK agents of `nodes` (entry first), wire their handoffs, attach the entry's
    guardrails."""
    version, spec = nodes[entry]
    agents = {
        name: _sdk_agent(
            name,
            s,
            default_model=default_model,
            http_tools=http_tools,
            mcp=mcp,
            tenant_id=tenant_id,
        )
        for name, (_, s) in nodes.items()
    }
    for name, (_, node_spec) in nodes.items():
        agents[name].handoffs = [
            handoff(
                agents[target],
                tool_name_override=handoff_tool_name(target),
                tool_description_override=(
                    None if isinstance(item, str) else item.description or None
                ),
            )
            for item in node_spec.handoffs
            if (target := handoff_target(item)) in agents
        ]
    input_checks = None
    output_checks: dict[str, PatternSet] = {}
    models = {s.model or default_model for _, s in nodes.values()}
    for name, (_, node_spec) in nodes.items():
        guardrails = node_spec.guardrails
        if guardrails is not None:
            found = patterns_or_none("output.blocked_patterns", guardrails.output.blocked_patterns)
            if found is not None:
                output_checks[name] = found
    guardrails = spec.guardrails
    if guardrails is not None:
        checks = guardrails.input
        patterns = patterns_or_none("input.blocked_patterns", checks.blocked_patterns)
        if checks.max_chars is not None or patterns is not None:
            input_checks = InputChecks(checks.max_chars, patterns)
        if checks.classifier is not None:
            models.add(checks.classifier.model or spec.model or default_model)
            agents[entry].input_guardrails = [
                classifier_guardrail(
                    entry, checks.classifier, default_model=spec.model or default_model
                )
            ]
    seal(agents[entry])
    return BuiltAgent(
        agent=agents[entry],
        name=entry,
        version=version,
        model=spec.model or default_model,
        max_turns=spec.max_turns,
        max_tokens=spec.model_settings.max_tokens,
        description=spec.description,
        upstream=spec.upstream,
        models=tuple(sorted(models)),
        needs_approval=any(s.needs_approval() for _, s in nodes.values()),
        input_checks=input_checks,
        output_checks=output_checks,
        versions=tuple(sorted((name, v) for name, (v, _) in nodes.items())),
        has_mcp=any(agent.mcp_servers for agent in agents.values()),
    )


def build_agent(
    name: str,
    version: int,
    spec: AgentSpec,
    *,
    default_model: str,
    http_tools: HttpTools | None = None,
) -> BuiltAgent:
    """Build the SDK Agent of one spec version (its handoff targets left out)."""
    return build_graph(
        name, {name: (version, spec)}, default_model=default_model, http_tools=http_tools
    )


_Active = tuple[int, AgentSpec | None, list[str] | None]
"""(active version, its spec, the tenant's allowed models); version 0: no such agent."""


class AgentCache:
    """Active-version look-ups (TTL) and built graphs (LRU by immutable versions)."""

    def __init__(
        self,
        *,
        ttl_s: float,
        max_size: int,
        http_tools: HttpTools | None = None,
        stale_s: float = 0.0,
        mcp: McpServers | None = None,
    ) -> None:
        self._http_tools = http_tools
        self._mcp = mcp
        # A missing agent is cached as version 0 so unknown names do not hit the DB each time.
        # The tenant's allowed models ride along (dropped with the tenant's entries).
        self._active: TTLCache[tuple[str, str], _Active] = TTLCache(
            ttl_s=ttl_s, max_size=max_size, stale_s=stale_s
        )
        # Key: (tenant, entry agent, its version) without handoffs, else the versions of the
        # whole graph.
        self._built: OrderedDict[tuple[str, str, int | Versions], BuiltAgent] = OrderedDict()
        self._max_size = max_size

    def invalidate_tenant(self, tenant_id: str) -> None:
        """Forget which versions a tenant's agents have active (built graphs stay: immutable)."""
        self._active.discard_where(lambda key: key[0] == tenant_id)

    def clear(self) -> None:
        """Forget every active-version look-up."""
        self._active.clear()

    async def _active_version(self, db: Database, tenant_id: str, name: str) -> _Active:
        async def load() -> _Active:
            async with db.session() as session:
                found = await AgentRepository(session).get_active_with_models(tenant_id, name)
            if found is None:
                return (0, None, None)
            version_row, allowed = found
            return (version_row.version, stored_spec(version_row.spec), allowed)

        return await self._active.get_or_load((tenant_id, name), load)

    async def _reachable(
        self, db: Database, tenant_id: str, name: str, version: int, spec: AgentSpec
    ) -> dict[str, tuple[int, AgentSpec]]:
        """The entry agent and every agent reachable from it through handoffs."""
        nodes: dict[str, tuple[int, AgentSpec]] = {name: (version, spec)}
        pending = list(spec.handoff_targets())
        while pending:
            target = pending.pop()
            if target in nodes:
                continue
            if len(nodes) >= MAX_GRAPH_AGENTS:
                # PUT and activate refuse a larger graph; only a race between them gets here.
                logger.warning("agent graph of %s cut at %d agents", name, MAX_GRAPH_AGENTS)
                break
            target_version, target_spec, _ = await self._active_version(db, tenant_id, target)
            if target_spec is None:
                # PUT and DELETE refuse this; only a race between them gets here.
                logger.warning("handoff target %s of %s has no active version", target, name)
                continue
            nodes[target] = (target_version, target_spec)
            pending.extend(target_spec.handoff_targets())
        return nodes

    async def get_version(
        self,
        db: Database,
        tenant_id: str,
        name: str,
        version: int,
        *,
        default_model: str,
        graph: dict[str, int] | None = None,
    ) -> BuiltAgent | None:
        """Version `version` of a tenant's agent, for a paused run resuming on what it paused
        on: with `graph` (every agent of the run's graph and its version then), exactly those
        versions; without (a run paused before graphs were stored), the active versions of its
        handoff targets. None if an agent or a version of it is gone."""
        active, _, allowed = await self._active_version(db, tenant_id, name)
        built: BuiltAgent | None
        if graph is not None and len(graph) > 1:
            built = await self._pinned(db, tenant_id, name, graph, default_model)
        elif active == version:
            return await self.get(db, tenant_id, name, default_model=default_model)
        else:
            async with db.session() as session:
                spec = await _version_spec(AgentRepository(session), tenant_id, name, version)
            if spec is None:
                return None
            nodes = (
                await self._reachable(db, tenant_id, name, version, spec)
                if spec.handoffs
                else {name: (version, spec)}
            )
            built = self._built_graph(tenant_id, name, nodes, default_model)
        if built is not None:
            _check_models(name, built, allowed)
        return built

    async def _pinned(
        self, db: Database, tenant_id: str, entry: str, graph: dict[str, int], default_model: str
    ) -> BuiltAgent | None:
        """The graph of exactly these (agent, version) pairs; None if one is gone."""
        nodes: dict[str, tuple[int, AgentSpec]] = {}
        async with db.session() as session:
            repository = AgentRepository(session)
            for node, node_version in graph.items():
                spec = await _version_spec(repository, tenant_id, node, node_version)
                if spec is None:
                    return None
                nodes[node] = (node_version, spec)
        if entry not in nodes:
            return None
        return self._built_graph(tenant_id, entry, nodes, default_model)

    def _built_graph(
        self,
        tenant_id: str,
        entry: str,
        nodes: dict[str, tuple[int, AgentSpec]],
        default_model: str,
    ) -> BuiltAgent:
        """The built graph of `nodes` (from the cache of built graphs, or built now)."""
        version, spec = nodes[entry]
        built_key: tuple[str, str, int | Versions] = (
            (tenant_id, entry, tuple(sorted((n, v) for n, (v, _) in nodes.items())))
            if spec.handoffs
            else (tenant_id, entry, version)
        )
        built = self._built.get(built_key)
        if built is None:
            built = build_graph(
                entry,
                nodes,
                default_model=default_model,
                http_tools=self._http_tools,
                mcp=self._mcp,
                tenant_id=tenant_id,
            )
            self._built[built_key] = built
            if len(self._built) > self._max_size:
                self._built.popitem(last=False)
        return built

    async def get(
        self, db: Database, tenant_id: str, name: str, *, default_model: str
    ) -> BuiltAgent | None:
        """The runnable active version of a tenant's agent (with the active versions of its
        handoff targets), or None if it has none."""
        version, spec, allowed = await self._active_version(db, tenant_id, name)
        if spec is None:
            return None
        nodes: dict[str, tuple[int, AgentSpec]] | None = None
        built_key: tuple[str, str, int | Versions]
        if spec.handoffs:
            nodes = await self._reachable(db, tenant_id, name, version, spec)
            built_key = (tenant_id, name, tuple(sorted((n, v) for n, (v, _) in nodes.items())))
        else:
            built_key = (tenant_id, name, version)  # the common case: no tuple to build or hash
        built = self._built.get(built_key)
        if built is None:
            built = build_graph(
                name,
                nodes or {name: (version, spec)},
                default_model=default_model,
                http_tools=self._http_tools,
                mcp=self._mcp,
                tenant_id=tenant_id,
            )
            self._built[built_key] = built
            if len(self._built) > self._max_size:
                self._built.popitem(last=False)
        else:
            self._built.move_to_end(built_key)
        _check_models(name, built, allowed)
        return built


async def _version_spec(
    repository: AgentRepository, tenant_id: str, name: str, version: int
) -> AgentSpec | None:
    """The spec of version `version` of the tenant's agent `name`; None if either is gone."""
    agent = await repository.get(tenant_id, name)
    row = None if agent is None else await repository.get_version(tenant_id, agent.id, version)
    return None if row is None else stored_spec(row.spec)


def _check_models(name: str, built: BuiltAgent, allowed: list[str] | None) -> None:
    """403 `model_not_allowed` if the graph may call a model the tenant may no longer use."""
    if allowed is not None and (refused := [m for m in built.models if m not in allowed]):
        raise PermissionDeniedError(
            f"Agent '{name}' (or its handoff targets or input classifier) uses model "
            f"'{refused[0]}', which this tenant may not use.",
            code="model_not_allowed",
        )
