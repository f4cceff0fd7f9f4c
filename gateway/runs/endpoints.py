"""`POST /v1/agents/{name}/runs`: plain JSON or SSE, chosen by `stream` or `Accept`."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Annotated, Any

import orjson
from fastapi import APIRouter, Depends, Path, Request
from fastapi.responses import Response, StreamingResponse
from starlette.types import Receive, Scope, Send

from gateway.auth.dependencies import RunsPrincipal
from gateway.conversations.service import Turn
from gateway.core.json_body import JsonBodyRoute
from gateway.core.state import app_state
from gateway.limits.headers import add_headers
from gateway.runs.schemas import RunRequest
from gateway.runs.service import RunHandle, RunService
from gateway.runs.streaming import stream_run
from tenants.agent.spec import AGENT_NAME_PATTERN

router = APIRouter(route_class=JsonBodyRoute, tags=["runs"])


async def get_run_service(request: Request) -> RunService:
    return app_state(request).runs


RunServiceDep = Annotated[RunService, Depends(get_run_service)]
AgentName = Annotated[str, Path(pattern=AGENT_NAME_PATTERN)]


@router.post("/agents/{name}/runs", summary="Run an agent (plain or streamed)")
async def create_run(
    name: AgentName,
    body: RunRequest,
    request: Request,
    principal: RunsPrincipal,
    service: RunServiceDep,
) -> Response:
    stream = body.stream or "text/event-stream" in request.headers.get("accept", "")
    sdk_input = request_input = body.sdk_input()
    turn: Turn | None = None
    if body.conversation_id is not None:
        turns = app_state(request).conversations
        turn = await turns.begin(principal, body.conversation_id)
        sdk_input = turn.input_with(sdk_input)
    try:
        handle = await service.start(principal, name, sdk_input, request_input=request_input)
        handle.turn = turn
        admitted(request, handle)
        if stream:
            chunks = stream_run(handle, sdk_input, keepalive_s=service.settings.stream_keepalive_s)
            response = RunStreamResponse(chunks, handle, turn)
            turn = None  # the response releases it now, however it ends
            return response
        result: dict[str, Any] = await service.run(handle, sdk_input)
    finally:
        if turn is not None:
            await turn.release()
    return Response(orjson.dumps(result), media_type="application/json")


def admitted(request: Request, handle: RunHandle) -> None:
    """An admitted run's token headers on the response, and its agent in the access log."""
    if handle.ticket is not None:
        add_headers(request.scope["state"], handle.ticket.token_headers())
    request.state.agent = handle.built.name


class RunStreamResponse(StreamingResponse):
    """A streamed run's response (never cached or buffered by a proxy).

    However the response ends, even when the client is gone before its first byte (the run's
    generators then never start, so their own `finally` never runs), the run is settled
    (`cancelled` unless it already was: in-flight gauge, usage record, lease) and the
    conversation's lock released, exactly once.
    """

    def __init__(
        self, chunks: AsyncIterator[bytes], handle: RunHandle, turn: Turn | None = None
    ) -> None:
        super().__init__(
            chunks,
            media_type="text/event-stream",
            headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
        )
        self.handle = handle
        self.turn = turn

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            self.handle.settle("cancelled")  # no-op once settled
            if self.turn is not None:
                await self.turn.release()
