"""Runs that pause for a human decision and resume on any replica.

When the model calls a tool with `requires_approval`, the Agents SDK stops the run with
interruptions instead of calling it. `RunApprovals.pause` stores the run's serialised SDK
state (`RunState.to_string()`) with its pending calls in `stored_runs` and answers
`status: "requires_action"` with `pending_actions`. `POST /v1/runs/{run_id}/actions` then:

1. reads the stored run (404 for another tenant's or end user's run, or once it expired after
   `GATEWAY_RUN_STATE_TTL_S`), checks every pending call has exactly one decision (422);
2. is admitted like any run (request limit, concurrency slot, token reservations: a paused
   run holds none of them while it waits);
3. claims the row (`StoredRunRepository.claim`, one conditional UPDATE): a second resume,
   also from another replica at the same moment, gets 409 and calls nothing;
4. rebuilds the state against the same agent version, approves or rejects each call (a
   declined call is never sent; the model gets the refusal as its output) and runs the next
   segment, which may pause again, complete or fail.

Each segment records its own usage record under the run id (segment 0, 1, ...), so reports
count the tokens of every segment and the run once.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

import orjson
from agents import RunState
from agents.items import ToolApprovalItem
from agents.result import RunResult, RunResultStreaming
from agents.tool import ToolOriginType

from gateway.core.background import BackgroundTasks
from gateway.core.clock import as_utc, rfc3339, utcnow
from gateway.core.db import Database
from gateway.core.errors import ConflictError, NotFoundError, ValidationFailedError
from gateway.runs.schemas import Decision
from gateway.runs.store import RESUMING, StoredRunRepository
from observability.metrics import RUNS_WAITING, record_tool_call
from tenants.models import StoredRun
from tenants.models.stored_run import WAITING

logger = logging.getLogger("gateway.runs")

DECLINED = "The user declined this tool call."


def not_found() -> NotFoundError:
    return NotFoundError("No such run.", code="run_not_found")


def _call_id(item: ToolApprovalItem) -> str:
    raw = item.raw_item
    value = raw.get("call_id") if isinstance(raw, dict) else getattr(raw, "call_id", None)
    return str(value)


def _arguments(item: ToolApprovalItem) -> Any:
    raw = item.raw_item
    text = raw.get("arguments") if isinstance(raw, dict) else getattr(raw, "arguments", None)
    try:
        return orjson.loads(text or "{}")
    except orjson.JSONDecodeError:
        return text


def pending_actions(interruptions: Sequence[ToolApprovalItem]) -> list[dict[str, Any]]:
    """`[{"id", "tool", "arguments"}]` of the calls waiting for a decision."""
    return [
        {"id": _call_id(item), "tool": item.tool_name, "arguments": _arguments(item)}
        for item in interruptions
    ]


def apply_decisions(state: RunState[Any, Any], decisions: Sequence[Decision]) -> None:
    """Approve or reject each interrupted call of the state (decisions were checked)."""
    by_id = {decision.id: decision for decision in decisions}
    for item in state.get_interruptions():
        decision = by_id[_call_id(item)]
        if decision.approve:
            state.approve(item)
        else:
            message = DECLINED if not decision.message else f"{DECLINED} {decision.message}"
            state.reject(item, rejection_message=message)
            record_tool_call(item.tool_name or "unknown", _tool_type(item), "declined", 0.0)


def _tool_type(item: ToolApprovalItem) -> str:
    """`mcp` for a call of an MCP server's tool, else `http` (the other kind that can ask for
    approval), as `gateway_tool_calls_total` counts them."""
    origin = item.tool_origin
    return "mcp" if origin is not None and origin.type == ToolOriginType.MCP else "http"


def check_decisions(row: StoredRun, decisions: Sequence[Decision]) -> None:
    """Exactly one decision per pending call, and no other (422 otherwise)."""
    pending = {action["id"] for action in row.pending or []}
    given = [decision.id for decision in decisions]
    if len(set(given)) != len(given):
        raise ValidationFailedError(
            "A call has two decisions.", param="decisions", code="invalid_value"
        )
    unknown = sorted(set(given) - pending)
    if unknown:
        raise ValidationFailedError(
            f"No pending call with id {', '.join(unknown)}.",
            param="decisions",
            code="invalid_value",
        )
    missing = sorted(pending - set(given))
    if missing:
        raise ValidationFailedError(
            f"Every pending call needs a decision; missing: {', '.join(missing)}.",
            param="decisions",
            code="invalid_value",
        )


def stored_response(row: StoredRun) -> dict[str, Any]:
    """The run object of a stored run (`GET /v1/runs/{run_id}`)."""
    body: dict[str, Any] = {
        "id": row.id,
        "object": "agent.run",
        "agent": row.agent,
        "status": row.status if row.status != RESUMING else "in_progress",
        "output": row.output,
        "conversation_id": row.conversation_id,
        "model": row.model,
        "usage": row.usage or {},
        "created_at": rfc3339(row.created_at),
    }
    if row.error is not None:
        body["error"] = row.error
    if row.status == WAITING:
        body["pending_actions"] = row.pending or []
        body["expires_at"] = rfc3339(row.expires_at)
    return body


class RunApprovals:
    """Stores paused runs and hands them to one resume."""

    def __init__(self, db: Database, *, ttl_s: float) -> None:
        self.db = db
        self.ttl = timedelta(seconds=ttl_s)
        self.background = BackgroundTasks("waiting-runs-gauge")

    def start(self, interval_s: float = 5.0) -> None:
        """Keep `gateway_runs_waiting_for_approval` current (expiries need no event)."""
        self.background.every(interval_s, self.count_waiting)

    async def drain(self) -> None:
        await self.background.drain()

    async def count_waiting(self) -> None:
        async with self.db.session() as session:
            RUNS_WAITING.set(await StoredRunRepository(session).count_waiting(utcnow()))

    async def waiting(self, tenant_id: str, user: str | None, run_id: str) -> StoredRun:
        """The caller's stored run (404 if not theirs, or waiting past its expiry)."""
        async with self.db.session() as session:
            row = await StoredRunRepository(session).get(tenant_id, user, run_id)
        if row is None or _expired(row):
            raise not_found()
        return row

    async def claim(self, row: StoredRun) -> None:
        """Take the run for this resume alone (409 if another resume has it, or had it)."""
        # Its own unit, committed at once: the claim is what keeps a second resume out.
        async with self.db.unit() as session:
            won = await StoredRunRepository(session).claim(
                row.tenant_id, row.user, row.id, utcnow()
            )
        if not won:
            raise ConflictError(
                "This run's decisions were already submitted.", code="run_not_waiting"
            )
        await self.count_waiting()

    async def pause(
        self,
        result: RunResult | RunResultStreaming,
        response: dict[str, Any],
        *,
        tenant_id: str,
        user: str | None,
        agent_version: int,
        graph: dict[str, int],
        history_items: int,
        segment: int,
        created_at: datetime,
    ) -> dict[str, Any]:
        """Store the interrupted run (`created_at`: when the run, not this segment, started);
        the `requires_action` run object."""
        now = utcnow()
        pending = pending_actions(result.interruptions)
        state = result.to_state().to_string()
        async with self.db.unit() as session:
            row = await session.get(StoredRun, response["id"])
            if row is None:
                row = StoredRun(
                    id=response["id"],
                    tenant_id=tenant_id,
                    user=user,
                    agent=response["agent"],
                    agent_version=agent_version,
                    graph=graph,
                    model=response["model"],
                    status=WAITING,
                    conversation_id=response["conversation_id"],
                    history_items=history_items,
                    created_at=created_at,
                )
            row.status = WAITING
            row.state = state
            row.pending = pending
            row.usage = response["usage"]
            row.segments = segment + 1
            row.updated_at = now
            row.expires_at = now + self.ttl
            session.add(row)
        await self.count_waiting()
        return {
            **response,
            "status": WAITING,
            "pending_actions": pending,
            "expires_at": rfc3339(row.expires_at),
        }

    async def finish(
        self,
        run_id: str,
        status: str,
        output: Any,
        usage: dict[str, int],
        error: dict[str, Any] | None = None,
    ) -> None:
        """Record how a resumed run ended (its state is no longer needed); `error`: the error
        object of a failed one."""
        async with self.db.unit() as session:
            row = await session.get(StoredRun, run_id)
            if row is None:
                return
            row.status = status
            row.state = None
            row.pending = None
            row.output = output
            row.usage = usage
            row.error = error
            row.updated_at = utcnow()
            session.add(row)

    def finish_soon(self, run_id: str, status: str, usage: dict[str, int]) -> None:
        """`finish` in the background, for a resumed run that ended where nothing can await
        (a cancelled resume: the client left): the run is no longer `in_progress` and its
        conversation takes turns again."""

        async def finish() -> None:
            try:
                await self.finish(run_id, status, None, usage)
            except Exception:  # the row stays `resuming` until it expires: logged, not lost
                logger.exception("could not record the end of resumed run %s", run_id)

        self.background.run(finish())

    async def conversation_waiting(self, conversation_id: str) -> bool:
        async with self.db.session() as session:
            return await StoredRunRepository(session).conversation_waiting(
                conversation_id, utcnow()
            )


def _expired(row: StoredRun) -> bool:
    return row.status == WAITING and (row.expires_at is None or as_utc(row.expires_at) <= utcnow())
