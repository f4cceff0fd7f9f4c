"""`POST /v1/chat/completions`: an agent run behind the OpenAI Chat Completions API.

`model` is the agent's name. The run goes through the same `RunService` as
`POST /v1/agents/{name}/runs` (admission, token quotas, usage record, metrics), so limits,
headers and errors are the same; only the request and response shapes differ.
"""

from __future__ import annotations

from contextlib import AsyncExitStack

import orjson
from fastapi import APIRouter, Request
from fastapi.responses import Response

from gateway.auth.dependencies import RunsPrincipal
from gateway.chat.objects import completion
from gateway.chat.schemas import ChatCompletionRequest
from gateway.chat.stream import ChunkEncoder
from gateway.core.errors import InvalidRequestError
from gateway.core.json_body import JsonBodyRoute
from gateway.runs.endpoints import (
    RunServiceDep,
    RunStreamResponse,
    admitted,
    known_name,
    run_to_end,
)
from gateway.runs.responses import CHUNK_STREAM, ChatCompletion
from gateway.runs.streaming import stream_run

router = APIRouter(route_class=JsonBodyRoute, tags=["chat"])


@router.post(
    "/chat/completions",
    summary="OpenAI-compatible chat completion (model = agent name)",
    responses={
        200: {"model": ChatCompletion, "description": "The completion.", "content": CHUNK_STREAM}
    },
)
async def create_chat_completion(
    body: ChatCompletionRequest,
    request: Request,
    principal: RunsPrincipal,
    service: RunServiceDep,
) -> Response:
    sdk_input = body.sdk_input()
    request.state.agent = known_name(body.model, param="model")  # the access line's agent
    built = await service.resolve(principal, body.model, param="model")
    if built.needs_approval:
        raise InvalidRequestError(
            f"Agent '{built.name}' (or an agent it hands off to) has tools that require "
            "approval, which Chat Completions cannot pause for: run it with "
            f"POST /v1/agents/{built.name}/runs.",
            code="approval_not_supported",
            param="model",
        )
    async with AsyncExitStack() as owner:  # see create_run
        run = await owner.enter_async_context(service.start(principal, body.model, sdk_input))
        admitted(request, run.handle)
        if body.stream:
            encoder = ChunkEncoder(run.handle, include_usage=body.include_usage)
            keepalive_s = service.settings.stream_keepalive_s
            chunks = stream_run(run, sdk_input, keepalive_s=keepalive_s, encode=encoder)
            return RunStreamResponse(chunks, owner.pop_all())
        result = await run_to_end(request, service, run, sdk_input)
    return Response(
        orjson.dumps(completion(run.handle, result["output"])), media_type="application/json"
    )
