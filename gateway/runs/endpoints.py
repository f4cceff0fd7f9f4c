"""`POST /v1/agents/{name}/runs`: plain JSON or SSE, chosen by `stream` or `Accept`."""

from __future__ import annotations

from typing import Annotated

import orjson
from fastapi import APIRouter, Depends, Path, Request
from fastapi.responses import Response, StreamingResponse

from gateway.auth.dependencies import RunsPrincipal
from gateway.core.errors import NotFoundError
from gateway.limits.headers import add_headers
from gateway.runs.schemas import RunRequest
from gateway.runs.service import RunService
from gateway.runs.streaming import stream_run
from tenants.agent.spec import AGENT_NAME_PATTERN

router = APIRouter(tags=["runs"])


async def get_run_service(request: Request) -> RunService:
    service: RunService = request.app.state.runs
    return service


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
    if body.conversation_id is not None:
        raise NotFoundError("No such conversation.", code="conversation_not_found")
    stream = body.stream or "text/event-stream" in request.headers.get("accept", "")
    sdk_input = body.sdk_input()
    handle = await service.start(principal, name, sdk_input)
    if handle.ticket is not None:
        add_headers(request.scope["state"], handle.ticket.token_headers())
    request.state.agent = name
    if stream:
        return StreamingResponse(
            stream_run(handle, sdk_input, keepalive_s=service.settings.stream_keepalive_s),
            media_type="text/event-stream",
            headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
        )
    result = await service.run(handle, sdk_input)
    return Response(orjson.dumps(result), media_type="application/json")
