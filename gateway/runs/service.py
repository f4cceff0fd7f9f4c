"""Run an agent for a principal: resolve the agent, admit the run (`Run`, which settles it
however it ends), run it with an explicit RunConfig and its meter, store pauses.
"""

from __future__ import annotations

import asyncio
from dataclasses import replace
from functools import partial
from typing import Any

from agents import Runner, RunState
from agents.models.openai_provider import OpenAIProvider
from agents.result import RunResult, RunResultStreaming

from gateway.agents.builder import AgentCache, BuiltAgent
from gateway.agents.upstreams import TenantUpstreams
from gateway.auth.principal import Principal
from gateway.core.clock import as_utc, utcnow
from gateway.core.config import Settings
from gateway.core.db import Database
from gateway.core.drain import Drain
from gateway.core.errors import ConflictError, GatewayError, NotFoundError
from gateway.core.ids import new_id
from gateway.limits.breaker import RedisBreaker
from gateway.limits.prices import PriceCache
from gateway.limits.quotas import QuotaService
from gateway.runs.approvals import RunApprovals, apply_decisions, check_decisions
from gateway.runs.checks import check_input, check_output, stored_items
from gateway.runs.failures import map_run_error, run_status
from gateway.runs.handle import RunHandle
from gateway.runs.lifecycle import Run
from gateway.runs.meter import first_call_estimate, resume_estimate
from gateway.runs.objects import run_object, run_usage
from gateway.runs.schemas import Decision
from gateway.tools.mcp import McpServers
from gateway.usage.recorder import UsageRecorder
from tenants.models.stored_run import WAITING


class RunService:
    """Resolves agents and executes runs; one per app, built from app state."""

    def __init__(
        self,
        *,
        settings: Settings,
        db: Database,
        agents: AgentCache,
        providers: Any,
        recorder: UsageRecorder,
        quotas: QuotaService | None = None,
        upstreams: TenantUpstreams | None = None,
        drain: Drain | None = None,
        approvals: RunApprovals | None = None,
        mcp: McpServers | None = None,
        prices: PriceCache | None = None,
    ) -> None:
        self.mcp = mcp
        self.approvals = approvals or RunApprovals(db, ttl_s=settings.run_state_ttl_s)
        self.upstreams = upstreams
        self.settings = settings
        self.drain = drain or Drain(0.0, 0.0)
        self.quotas = quotas or QuotaService(
            settings, None, RedisBreaker(retry_s=settings.limits_redis_retry_s, fail_open=True)
        )
        self.db = db
        self.agents = agents
        self.providers = providers
        self.recorder = recorder
        self.prices = prices or PriceCache(None, settings.prices_refresh_s)

    async def resolve(
        self, principal: Principal, name: str, *, param: str | None = None
    ) -> BuiltAgent:
        """The tenant's agent, or 404 (also for another tenant's agent); `param` names the
        request field the name came from (Chat Completions: `model`)."""
        built = await self.agents.get(
            self.db, principal.tenant_id, name, default_model=self.settings.default_model
        )
        if built is None:
            raise NotFoundError(f"No agent named '{name}'.", code="agent_not_found", param=param)
        return built

    async def provider_of(self, principal: Principal, built: BuiltAgent) -> OpenAIProvider:
        """The deployment's provider, or the tenant upstream the agent names."""
        if built.upstream is None or self.upstreams is None:
            return self.providers.default()  # type: ignore[no-any-return]
        return await self.upstreams.provider(principal.tenant_id, built.upstream)

    def start(
        self,
        principal: Principal,
        name: str,
        sdk_input: str | list[Any] | None = None,
        *,
        request_input: str | list[Any] | None = None,
    ) -> Run:
        """The run of agent `name`; entering it admits the run (token quotas, spend, the
        concurrency cap: 429 when full).

        With `sdk_input`, the first model call's tokens are reserved in the admission step.
        `request_input` is what the caller sent (default: `sdk_input`), without history.
        """

        async def admit() -> RunHandle:
            built = await self.resolve(principal, name)
            if built.agent.mcp_servers and self.mcp is not None:
                await self.mcp.ensure(
                    built.agent.mcp_servers, (tool.name for tool in built.agent.tools)
                )
            await self.recorder.wait_for_room()
            run_id = new_id("run")
            created_at = utcnow()
            price = self.prices.at(built.model, created_at)
            first = None if sdk_input is None else first_call_estimate(built.agent, sdk_input)
            # Before the admission: nothing may fail between taking the lease and reservation
            # and handing them to the run (which releases them on every outcome).
            provider = await self.provider_of(principal, built)
            ticket = await self.quotas.open(principal, run_id, first, built.max_tokens, price)
            timeout_s = self.settings.run_timeout_s
            return RunHandle(
                principal=principal,
                built=built,
                provider=provider,
                run_id=run_id,
                created_at=created_at,
                ticket=ticket,
                request_input=sdk_input if request_input is None else request_input,
                deadline=asyncio.get_running_loop().time() + timeout_s,
                timeout_s=timeout_s,
                price=price,
                price_of=partial(self.prices.at, when=created_at),
            )

        return Run(self, admit)

    def resume(self, principal: Principal, run_id: str, decisions: list[Decision]) -> Run:
        """The next segment of the caller's paused run; entering it admits the segment and
        claims the run (404 not theirs or expired, 409 already resumed, 422 decisions not
        matching the pending calls). Its handle's `resume_state` is what it continues from."""

        async def admit() -> RunHandle:
            row = await self.approvals.waiting(principal.tenant_id, principal.user, run_id)
            if row.status != WAITING or row.state is None:
                message = "This run's decisions were already submitted."
                if row.status == "cancelled":
                    message = "This run was cancelled (its agent was deleted, or a resume of it"
                    message += " was left by its client): it can no longer resume."
                raise ConflictError(message, code="run_not_waiting")
            check_decisions(row, decisions)
            # The run stays its end user's when the tenant's API key decides for them: its
            # tools are told that user, its usage segment counts for them, and a next pause
            # is stored as theirs (the key that made this request stays the record's key).
            owner = principal if row.user is None else replace(principal, user=row.user)
            built = await self.agents.get_version(
                self.db,
                principal.tenant_id,
                row.agent,
                row.agent_version,
                default_model=self.settings.default_model,
                graph=row.graph,
            )
            if built is None:
                raise NotFoundError(f"No agent named '{row.agent}'.", code="agent_not_found")
            if built.agent.mcp_servers and self.mcp is not None:
                await self.mcp.ensure(
                    built.agent.mcp_servers, (tool.name for tool in built.agent.tools)
                )
            state = await RunState.from_string(built.agent, row.state)
            apply_decisions(state, decisions)
            provider = await self.provider_of(principal, built)
            await self.recorder.wait_for_room()
            # A segment is priced when it starts, like a run: its spend is reserved and
            # settled against the tenant's budgets as well as its tokens.
            created_at = utcnow()
            price = self.prices.at(built.model, created_at)
            # The segment's first model call is reserved at admission, as a run's: a window
            # it cannot fit refuses the resume before the approved calls run, and the run
            # stays waiting for a retry (its claim comes after).
            first = resume_estimate(built.agent, state)
            ticket = await self.quotas.open(principal, run_id, first, built.max_tokens, price)
            try:
                await self.approvals.claim(row)
            except BaseException:
                if ticket is not None:
                    await ticket.close()
                raise
            return RunHandle(
                principal=owner,
                built=built,
                provider=provider,
                run_id=run_id,
                created_at=created_at,
                ticket=ticket,
                segment=row.segments,
                prior_usage=row.usage,
                first_created_at=as_utc(row.created_at),
                history_items=row.history_items,
                resume_state=state,
                deadline=asyncio.get_running_loop().time() + self.settings.run_timeout_s,
                timeout_s=self.settings.run_timeout_s,
                price=price,
                price_of=partial(self.prices.at, when=created_at),
            )

        return Run(self, admit)

    async def pause(
        self, handle: RunHandle, result: RunResult | RunResultStreaming
    ) -> dict[str, Any]:
        """Store an interrupted run; its `requires_action` run object."""
        history = handle.history_items
        if history is None:
            history = 0 if handle.turn is None else len(handle.turn.history)
        return await self.approvals.pause(
            result,
            run_object(handle, None, status="requires_action"),
            tenant_id=handle.principal.tenant_id,
            user=handle.principal.user,
            agent_version=handle.built.version,
            graph=dict(handle.built.versions),
            history_items=history,
            segment=handle.segment,
            created_at=handle.run_created_at,
        )

    async def ended(
        self,
        handle: RunHandle,
        status: str,
        output: Any,
        error: GatewayError | None = None,
    ) -> None:
        """A resumed run's final state in its stored row (no-op for a run never paused);
        `error`: what a failed one answered."""
        if handle.segment > 0 and status != "requires_action":
            shown = None if error is None else error.body()["error"]
            await asyncio.shield(
                self.approvals.finish(handle.run_id, status, output, run_usage(handle), shown)
            )

    async def run(
        self, run: Run, sdk_input: str | list[Any] | RunState[Any, Any]
    ) -> dict[str, Any]:
        """Run to completion (or to a pause) and end it; the run object, or a GatewayError."""
        handle = run.handle
        status = "failed"
        deadline = run.deadline()
        output: Any = None
        paused: dict[str, Any] | None = None
        error: GatewayError | None = None
        try:
            await check_input(handle)
            run.enter_scope()
            async with self.drain.until_deadline(), deadline:
                result = await Runner.run(
                    handle.built.agent,
                    sdk_input,
                    max_turns=handle.built.max_turns,
                    hooks=handle.meter,
                    run_config=run.run_config(),
                    context=run.tool_context(),
                )
            if result.interruptions:
                paused = await self.pause(handle, result)
                status = "requires_action"
            else:
                await check_output(handle, result)
                if handle.turn is not None:
                    await handle.turn.append(await stored_items(handle, result))
                status = "completed"
                output = result.final_output
        except BaseException as exc:
            if not isinstance(exc, Exception):
                status = "cancelled"
                raise
            status = run_status(exc)
            if deadline.expired():
                error = run.timed_out()
            else:
                error = map_run_error(
                    exc,
                    model=handle.built.model,
                    max_turns=handle.built.max_turns,
                    meter=handle.meter,
                )
            raise error from exc
        finally:
            await run.end(status)
            await self.ended(handle, status, output, error)
        if paused is not None:
            return paused
        return run_object(handle, output)
