"""Agent rules: every PUT stores a new immutable version and activates it; rollback by
activating an older one. Agents of unknown or deleted tenants are 404.

Usable without a request (CLI, demo seeding): every function takes the session and flushes
its changes; the caller's unit of work commits them together with their audit event
(tenants/audit).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from pydantic import ValidationError
from sqlalchemy.exc import IntegrityError
from sqlmodel import col, select, update
from sqlmodel.ext.asyncio.session import AsyncSession

from gateway.core.clock import utcnow
from gateway.core.errors import ConflictError, NotFoundError, ValidationFailedError
from gateway.core.ids import new_id
from tenants.agent.composition import MAX_GRAPH_AGENTS
from tenants.agent.repository import AgentRepository
from tenants.agent.spec import AGENT_NAME_RE, AgentSpec, stored_spec
from tenants.models import Agent, AgentVersion, StoredRun
from tenants.models.stored_run import WAITING
from tenants.pagination import Page, PageParams
from tenants.scoping import lock_tenant, require_tenant

_PUT_ATTEMPTS = 5
_MAX_VERSION = 2**31 - 1


def _no_agent(name: str) -> NotFoundError:
    return NotFoundError(f"No agent named '{name}'.", param="name")


async def _check_handoffs(
    repository: AgentRepository, tenant_id: str, name: str, spec: AgentSpec
) -> None:
    """422 unless every handoff names another existing agent of the same tenant (another
    tenant's agent is simply unknown)."""
    targets = spec.handoff_targets()
    if name in targets:
        raise ValidationFailedError(
            "handoffs: an agent cannot hand off to itself.", param="handoffs", code="invalid_value"
        )
    existing = await repository.existing_names(tenant_id, targets)
    unknown = [target for target in targets if target not in existing]
    if unknown:
        raise ValidationFailedError(
            f"handoffs: no agent named {', '.join(repr(t) for t in unknown)} in this tenant.",
            param="handoffs",
            code="unknown_agent",
        )
    if targets:
        await _check_graph_sizes(repository, tenant_id, name, targets)


async def _check_graph_sizes(
    repository: AgentRepository, tenant_id: str, name: str, targets: list[str]
) -> None:
    """422 when this agent's handoffs would make a run's graph (the agent a run enters and all
    it reaches) hold more than `MAX_GRAPH_AGENTS`: this agent's own, or that of any agent that
    reaches it. The run would otherwise cut the graph short, silently."""
    graph = {
        agent.name: stored_spec(version.spec).handoff_targets()
        for agent, version in await repository.list_active(tenant_id)
    }
    graph[name] = targets
    callers: dict[str, list[str]] = {}
    for caller, called in graph.items():
        for target in called:
            callers.setdefault(target, []).append(caller)
    entries = _reach(name, callers)  # every agent whose runs can reach this one
    for entry in sorted(entries):
        size = len(_reach(entry, graph))
        if size > MAX_GRAPH_AGENTS:
            whose = "this agent" if entry == name else f"agent '{entry}'"
            raise ValidationFailedError(
                f"handoffs: the handoff graph of {whose} would hold {size} agents; at most "
                f"{MAX_GRAPH_AGENTS} (the agent a run starts with and every agent it reaches).",
                param="handoffs",
                code="invalid_value",
            )


def _reach(start: str, edges: dict[str, list[str]]) -> set[str]:
    """`start` and every name reachable from it along `edges`."""
    seen = {start}
    pending = [start]
    while pending:
        for following in edges.get(pending.pop(), ()):
            if following not in seen:
                seen.add(following)
                pending.append(following)
    return seen


async def put_agent(
    session: AsyncSession, tenant_id: str, name: str, spec: AgentSpec
) -> tuple[Agent, AgentVersion, bool]:
    """Store `spec` as the agent's next version and activate it.

    Returns the agent, the new version and whether the agent was created by this call.
    """
    if not AGENT_NAME_RE.fullmatch(name):
        raise ValidationFailedError(
            "Agent names are 1-64 characters of a-z, 0-9, '_' and '-'.",
            param="name",
            code="invalid_value",
        )
    # Plain string: a rollback below expires every loaded row, including the tenant.
    owner = (await require_tenant(session, tenant_id)).id
    repository = AgentRepository(session)
    await _check_handoffs(repository, owner, name, spec)
    for _ in range(_PUT_ATTEMPTS):
        now = utcnow()
        created = False
        try:
            agent = await repository.bump_version(owner, name, now)
            if agent is None:
                created = True
                agent = Agent(
                    id=new_id("agt"),
                    tenant_id=owner,
                    name=name,
                    active_version=1,
                    latest_version=1,
                    created_at=now,
                    updated_at=now,
                )
                repository.add(agent)
            version = AgentVersion(
                agent_id=agent.id, version=agent.latest_version, spec=spec.stored(), created_at=now
            )
            repository.add(version)
            await session.flush()
        except IntegrityError:
            # Another PUT created the same agent first: retry, now as a new version of it.
            await session.rollback()
            continue
        return agent, version, created
    raise ConflictError(f"Agent '{name}' is being changed concurrently; retry.", param="name")


async def get_agent(session: AsyncSession, tenant_id: str, name: str) -> tuple[Agent, AgentVersion]:
    """The tenant's agent and its active version (404 if either is missing)."""
    tenant = await require_tenant(session, tenant_id)
    repository = AgentRepository(session)
    agent = await repository.get(tenant.id, name)
    if agent is None:
        raise _no_agent(name)
    version = await repository.get_version(tenant.id, agent.id, agent.active_version)
    if version is None:
        raise _no_agent(name)
    return agent, version


async def list_agents(
    session: AsyncSession, tenant_id: str, page: PageParams
) -> Page[tuple[Agent, AgentVersion]]:
    """One page of the tenant's agents with their active versions, oldest first."""
    tenant = await require_tenant(session, tenant_id)
    repository = AgentRepository(session)
    agents = await repository.list_page(tenant.id, page)
    active = await repository.active_versions(tenant.id, agents.items)
    items = [(agent, active[agent.id]) for agent in agents.items if agent.id in active]
    return Page(items=items, has_more=agents.has_more)


async def delete_agent(session: AsyncSession, tenant_id: str, name: str) -> None:
    """Delete the agent and every version of it (409 while another agent hands off to it)."""
    tenant = await require_tenant(session, tenant_id)
    await lock_tenant(session, tenant.id)  # no PUT naming it lands between check and delete
    repository = AgentRepository(session)
    agent = await repository.get(tenant.id, name)
    if agent is None:
        raise _no_agent(name)
    users = [
        other.name
        for other, version in await repository.list_active(tenant.id)
        if other.id != agent.id and name in stored_spec(version.spec).handoff_targets()
    ]
    if users:
        raise ConflictError(
            f"Agent '{name}' is a handoff target of {', '.join(repr(u) for u in users)}; "
            "remove it from their handoffs first.",
            param="name",
            code="agent_in_use",
        )
    await repository.delete(tenant.id, agent.id)
    await cancel_waiting_runs(session, tenant.id, name)
    await session.flush()


async def cancel_waiting_runs(session: AsyncSession, tenant_id: str, name: str) -> None:
    """The runs paused for an approval whose graph holds the agent (as the entry agent or a
    handoff target) end `cancelled` with it: their state names an agent that is gone (an
    agent PUT later under the same name is another agent, and must not finish them), and
    their conversations are free again."""
    waiting = select(StoredRun.id, StoredRun.agent, StoredRun.graph).where(
        col(StoredRun.tenant_id) == tenant_id, col(StoredRun.status) == WAITING
    )
    ids = [
        run_id
        for run_id, agent, graph in (await session.exec(waiting)).all()
        if agent == name or (isinstance(graph, dict) and name in graph)
    ]
    if not ids:
        return
    statement: Any = (
        update(StoredRun)
        .where(col(StoredRun.id).in_(ids), col(StoredRun.status) == WAITING)
        .values(status="cancelled", state=None, pending=None, updated_at=utcnow())
        .execution_options(synchronize_session=False)
    )
    await session.exec(statement)


async def list_versions(
    session: AsyncSession, tenant_id: str, name: str, page: PageParams
) -> tuple[Agent, Page[AgentVersion]]:
    """The agent and one page of its versions, newest first; `after` is a version number."""
    before: int | None = None
    if page.after is not None:
        if not (page.after.isascii() and page.after.isdigit() and len(page.after) <= 9):
            raise ValidationFailedError(
                "after: must be a version number.", param="after", code="invalid_value"
            )
        before = int(page.after)
    tenant = await require_tenant(session, tenant_id)
    repository = AgentRepository(session)
    agent = await repository.get(tenant.id, name)
    if agent is None:
        raise _no_agent(name)
    versions = await repository.list_versions(tenant.id, agent.id, limit=page.limit, before=before)
    return agent, versions


async def activate_version(
    session: AsyncSession,
    tenant_id: str,
    name: str,
    number: int,
    *,
    check: Callable[[AgentSpec], Awaitable[None]] | None = None,
) -> tuple[Agent, AgentVersion]:
    """Make version `number` the one that runs (rollback or roll forward); `check` is run on
    its spec first (the PUT route's checks, which need the deployment's settings)."""
    tenant = await require_tenant(session, tenant_id)
    repository = AgentRepository(session)
    agent = await repository.get(tenant.id, name)
    if agent is None:
        raise _no_agent(name)
    # Out-of-range numbers cannot exist (and would overflow the INTEGER column's parameter).
    in_range = 1 <= number <= _MAX_VERSION
    version = await repository.get_version(tenant.id, agent.id, number) if in_range else None
    if version is None:
        raise NotFoundError(f"Agent '{name}' has no version {number}.", param="version")
    try:
        spec = AgentSpec.model_validate(version.spec)  # held to today's rules, as a PUT is
    except ValidationError as exc:
        error = exc.errors()[0]
        where = ".".join(str(part) for part in error["loc"] if not str(part).startswith("<"))
        raise ValidationFailedError(
            f"Version {number} of agent '{name}' no longer passes the checks a PUT makes "
            f"({where}: {error['msg']}); PUT a corrected spec instead.",
            param=where or None,
            code="invalid_value",
        ) from None
    await _check_handoffs(repository, tenant.id, name, spec)
    if check is not None:
        await check(spec)
    agent.active_version = number
    agent.updated_at = utcnow()
    session.add(agent)
    await session.flush()
    return agent, version
