"""`Run`: one run as an owned resource, opened and settled in one place.

`async with service.start(...) as run:` (or `service.resume(...)`) admits the run on entry
(the agent resolved, token and spend reservations and the concurrency lease taken: 429 when
full) and raises the in-flight gauge; its exit settles it, exactly once, however the block
ends: the lease and reservations released, the usage record queued, the run's metrics
recorded. An exception that escapes the block gives the status (`cancelled` for a
cancellation or when the run never reached an outcome).

The code that executes the run ends it as soon as its outcome is known (`await run.end(status)`,
before the client sees that outcome: the slot is free for the client's next run); the exit is
then a no-op. A streamed response owns the run past its endpoint: the endpoint enters it on an
`AsyncExitStack` and hands the stack to the response (`RunStreamResponse`), whose end closes
it, even when the client left before the first byte and the stream never started. A stream
whose client left during a model call lets that call finish (the upstream has it, and bills
it) before the run settles, sending nothing further and calling no tool: the call is read to
its end, whether its answer had begun or not, within `GATEWAY_STREAM_DISCONNECT_GRACE_S`.
`winding` is the task reading it; the exit awaits it.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from types import TracebackType
from typing import TYPE_CHECKING, Any

from agents import RunConfig

from gateway.agents.context import CURRENT_RUN, RunScope
from gateway.core.errors import RunTimeoutError
from gateway.runs.failures import run_status
from gateway.runs.handle import RunHandle
from gateway.runs.meter import ModelTokens
from gateway.runs.objects import run_usage
from gateway.tools.context import run_context
from gateway.tools.mcp import start_run as start_mcp_run
from observability.metrics import IN_FLIGHT, record_model_usage, record_run, tenant_label
from observability.tracing import spans_wanted
from tenants.models import UsageRecord
from tenants.models.stored_run import WAITING
from tenants.price.pricing import Price

if TYPE_CHECKING:
    from gateway.runs.service import RunService


class Run:
    """One run from admission to settlement (an async context manager)."""

    __slots__ = ("_admit", "_handle", "client_gone", "service", "settled", "winding")

    def __init__(self, service: RunService, admit: Callable[[], Awaitable[RunHandle]]) -> None:
        self.service = service
        self._admit = admit
        self._handle: RunHandle | None = None
        self.settled = False
        self.client_gone = False
        """The client of this streamed run left; the run is winding down (`cancelled`)."""
        self.winding: asyncio.Task[None] | None = None
        """The task finishing the model call the upstream was answering when the client left."""

    @property
    def handle(self) -> RunHandle:
        """The run's state (after admission)."""
        if self._handle is None:
            raise RuntimeError("the run has not been admitted")
        return self._handle

    async def __aenter__(self) -> Run:
        self._handle = await self._admit()
        IN_FLIGHT.labels(tenant_label(self._handle.principal.tenant_slug)).inc()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        # Settles synchronously: this exit may run inside a cancelled scope (a client gone
        # mid-stream), where an await would be interrupted. The only await is a stream's
        # wind-down (its owner closes outside the response's cancelled scope).
        try:
            if self.winding is not None:
                await self.wind_down()
        finally:
            self.settle(run_status(exc) if isinstance(exc, Exception) else "cancelled")

    def wind_down_within(self, task: asyncio.Task[None], grace_s: float) -> None:
        """`task` finishes the call a gone client left; it is cancelled (the call cut) if it
        has not within `grace_s` (`GATEWAY_STREAM_DISCONNECT_GRACE_S`: a stalled upstream).
        A call whose answer has not begun yet is waited for too: the upstream has the request
        and bills it, and its usage comes only with its answer (cutting it early lost the
        tokens of every call slower to start than the cut)."""
        self.winding = task
        timer = asyncio.get_running_loop().call_later(grace_s, task.cancel)
        task.add_done_callback(lambda _: timer.cancel())

    async def wind_down(self) -> None:
        """Wait for the model call a gone client left in flight to be read and metered (the
        task bounds itself: the run's deadline, the drain deadline, the upstream timeout)."""
        winding = self.winding
        # A WebSocket turn winds down in its own task, which is the run's owner too.
        if winding is not None and not winding.done() and winding is not asyncio.current_task():
            await asyncio.wait((winding,))

    # The execution's view of the run.

    def run_config(self) -> RunConfig:
        """The provider passed explicitly: never the SDK's process-wide defaults. Every agent
        of the graph names its own model (a handoff target may use another one)."""
        handle = self.handle
        return RunConfig(
            model_provider=handle.provider,
            workflow_name=f"{handle.principal.tenant_slug}/{handle.built.name}",
            tracing_disabled=not spans_wanted(),
            # An MCP server's tool named as another tool of the agent (only a server's own
            # list can clash: the PUT refuses what the spec states) fails the run with 502
            # `tool_name_conflict`, as two servers clashing do, not one silently dropped.
            tool_name_collision_policy="error",
        )

    def tool_context(self) -> dict[str, Any]:
        """The SDK run context: what the run's tools tell their endpoints."""
        handle = self.handle
        return run_context(
            handle.run_id, handle.built.name, handle.principal.tenant_id, handle.principal.user
        )

    def enter_scope(self) -> None:
        """Make this the current run of the task, for an input classifier (which runs its
        own small agent inside the run); nothing to do for agents without one."""
        handle = self.handle
        if handle.built.has_mcp:
            start_mcp_run(handle.built.agent.mcp_servers)
        if handle.built.agent.input_guardrails:
            CURRENT_RUN.set(
                RunScope(
                    run_config=self.run_config(),
                    model_hooks=handle.meter.model_hooks(),
                    tenant=handle.principal.tenant_slug,
                )
            )

    def deadline(self) -> asyncio.Timeout:
        """The run's own deadline (`GATEWAY_RUN_TIMEOUT_S` after admission)."""
        return asyncio.timeout_at(self.handle.deadline)

    def timed_out(self) -> RunTimeoutError:
        """The error of a run past its deadline."""
        return RunTimeoutError(f"The run did not finish within {self.handle.timeout_s:g} seconds.")

    # The end.

    async def end(self, status: str) -> None:
        """The run's outcome is known: release its lease and reservations and settle.

        The release was sent when the final output was known (`RunMeter.on_agent_end`), else
        it is sent now; its round trip overlaps the settling and it is awaited before this
        returns, so the slot is free before the client sees the outcome. It runs in its own
        task, shielded: a cancelled request still completes its release.
        """
        closing: asyncio.Future[None] | None = None
        ticket = self.handle.ticket
        try:
            if ticket is not None and status != "cancelled" and ticket.limits.any:
                started = ticket.closing is not None
                closing = ticket.begin_close()
                if not started:
                    await asyncio.sleep(0)  # the task runs up to its first wait: command sent
        finally:
            self.settle(status)
            if closing is not None:
                await asyncio.shield(closing)

    def settle(self, status: str) -> None:
        """Record usage and metrics exactly once, whatever the outcome (no-op once settled)."""
        handle = self._handle
        if handle is None:
            return  # never admitted: nothing was taken
        if handle.ticket is not None:
            handle.ticket.close_soon()  # no-op once closed; covers cancelled runs
        if self.settled:
            return
        self.settled = True
        handle.meter.end_calls()
        principal = handle.principal
        IN_FLIGHT.labels(tenant_label(principal.tenant_slug)).dec()
        elapsed = time.perf_counter() - handle.started
        meter = handle.meter
        total = meter.total
        built = handle.built
        self.service.recorder.record(
            # Only read back as a dict by the batch insert: no validation or ORM state needed
            # (4.6 µs instead of 33 µs per run, on the request path).
            UsageRecord.model_construct(
                run_id=handle.run_id,
                segment=handle.segment,
                tenant_id=principal.tenant_id,
                key_id=principal.key_id,
                user=principal.user,
                agent=built.name,
                agent_version=built.version,
                model=built.model,
                requests=total.requests,
                input_tokens=total.input_tokens,
                output_tokens=total.output_tokens,
                cached_tokens=total.cached_tokens,
                reasoning_tokens=total.reasoning_tokens,
                total_tokens=total.total_tokens,
                model_usage=meter.model_usage(),
                # A segment that paused for approval ended normally: `completed`, one of the
                # record's four statuses (the run's own status says it waits).
                status="completed" if status == WAITING else status,
                latency_ms=int(elapsed * 1000),
                day=handle.created_at.date(),
                created_at=handle.created_at,
            )
        )
        if status == "cancelled" and handle.segment > 0:
            # A resume the client left: nothing else will say how the stored run ended.
            self.service.approvals.finish_soon(handle.run_id, status, run_usage(handle))
        record_run(
            tenant=principal.tenant_slug,
            agent=built.name,
            status=status,
            duration_s=elapsed,
            tokens=total.input_tokens + total.output_tokens,
            limits=principal.limits,
        )
        if meter.others is None:
            self._record_model(built.model, total, handle.price)
            return
        for model, tokens in meter.by_model().items():
            price = handle.price
            if model != built.model and handle.price_of is not None:
                price = handle.price_of(model)
            self._record_model(model, tokens, price)

    def _record_model(self, model: str, tokens: ModelTokens, price: Price | None) -> None:
        """The metrics of one model's calls in the run (priced when the run started)."""
        handle = self.handle
        record_model_usage(
            tenant=handle.principal.tenant_slug,
            agent=handle.built.name,
            model=model,
            requests=tokens.requests,
            input_tokens=tokens.input_tokens,
            output_tokens=tokens.output_tokens,
            cached_tokens=tokens.cached_tokens,
            reasoning_tokens=tokens.reasoning_tokens,
            cost_pico=None
            if price is None
            else price.cost(
                input_tokens=tokens.input_tokens,
                output_tokens=tokens.output_tokens,
                cached_tokens=tokens.cached_tokens,
                reasoning_tokens=tokens.reasoning_tokens,
            ),
        )
