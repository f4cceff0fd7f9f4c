"""`GET /v1/runs/{run_id}` (a stored run) and `POST /v1/runs/{run_id}/actions` (the decisions
that resume a paused run, plain or streamed, on any replica). See `gateway.runs.approvals`."""

from __future__ import annotations

import re
from contextlib import AsyncExitStack
from typing import Annotated

import orjson
from fastapi import APIRouter, Path, Request
from fastapi.responses import Response

from gateway.auth.dependencies import RunsPrincipal
from gateway.conversations.service import Turn
from gateway.core.json_body import JsonBodyRoute
from gateway.core.state import app_state
from gateway.runs.approvals import not_found, stored_response
from gateway.runs.endpoints import RunServiceDep, RunStreamResponse, admitted, run_to_end
from gateway.runs.responses import RunObject, run_answer
from gateway.runs.schemas import ActionsRequest
from gateway.runs.streaming import accepts_event_stream, stream_run

router = APIRouter(route_class=JsonBodyRoute, tags=["runs"])

RunId = Annotated[str, Path(description="The run's id.")]
RUN_ID = re.compile(r"run_[A-Za-z0-9]{1,40}")


def known_run(run_id: str) -> str:
    """`run_id`, or 404 `run_not_found` when no run can have it (never a 422: an unknown
    resource is a 404 however its id is spelt)."""
    if RUN_ID.fullmatch(run_id) is None:
        raise not_found()
    return run_id


@router.get(
    "/runs/{run_id}",
    summary="A stored run (paused for approval, or resumed)",
    responses={200: {"model": RunObject, "description": "The stored run."}},
)
async def get_run(run_id: RunId, principal: RunsPrincipal, service: RunServiceDep) -> Response:
    row = await service.approvals.waiting(principal.tenant_id, principal.user, known_run(run_id))
    return Response(orjson.dumps(stored_response(row)), media_type="application/json")


@router.post(
    "/runs/{run_id}/actions",
    summary="Decide on a paused run's tool calls and resume it",
    responses=run_answer("The resumed run: finished, or paused again for an approval."),
)
async def submit_actions(
    run_id: RunId,
    body: ActionsRequest,
    request: Request,
    principal: RunsPrincipal,
    service: RunServiceDep,
) -> Response:
    stream = body.stream or accepts_event_stream(request.headers.getlist("accept"))
    row = await service.approvals.waiting(principal.tenant_id, principal.user, known_run(run_id))
    async with AsyncExitStack() as owner:  # see create_run
        turn: Turn | None = None
        if row.conversation_id is not None:
            turn = await app_state(request).conversations.resume(row.conversation_id)
            owner.push_async_callback(turn.release)
        run = service.resume(principal, run_id, body.decisions)
        await owner.enter_async_context(run)
        run.handle.turn = turn
        admitted(request, run.handle)
        state = run.handle.resume_state
        assert state is not None
        if stream:
            chunks = stream_run(run, state, keepalive_s=service.settings.stream_keepalive_s)
            return RunStreamResponse(chunks, owner.pop_all())
        result = await run_to_end(request, service, run, state)
    return Response(orjson.dumps(result), media_type="application/json")
