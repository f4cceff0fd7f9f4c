"""`POST /v1/agents/{name}/runs`: plain JSON or SSE, chosen by `stream` or `Accept`."""

from __future__ import annotations

from collections.abc import AsyncGenerator, AsyncIterator
from contextlib import AsyncExitStack
from typing import TYPE_CHECKING, Annotated, Any

import orjson
from fastapi import APIRouter, Depends, Path, Request
from fastapi.responses import Response, StreamingResponse
from starlette.types import Receive, Scope, Send

from gateway.auth.dependencies import RunsPrincipal
from gateway.conversations.service import Turn, as_items
from gateway.core.errors import NotFoundError
from gateway.core.json_body import JsonBodyRoute
from gateway.core.state import app_state
from gateway.limits.headers import add_headers
from gateway.runs.handle import RunHandle
from gateway.runs.lifecycle import Run

if TYPE_CHECKING:
    from agents import RunState
from gateway.runs.responses import run_answer
from gateway.runs.schemas import RunRequest
from gateway.runs.service import RunService
from gateway.runs.streaming import accepts_event_stream, stream_run
from tenants.agent.spec import AGENT_NAME_RE

router = APIRouter(route_class=JsonBodyRoute, tags=["runs"])


async def get_run_service(request: Request) -> RunService:
    return app_state(request).runs


RunServiceDep = Annotated[RunService, Depends(get_run_service)]
AgentName = Annotated[str, Path(description="The agent's name.")]
"""Any name: one that no agent can have (see `AGENT_NAME_RE`) is 404 as an unknown one."""


def known_name(name: str, *, param: str | None = None) -> str:
    """`name`, or 404 `agent_not_found` when no agent can be named so (never a 422: an
    unknown resource is a 404 however its name is spelt); `param`: the field it came from."""
    if AGENT_NAME_RE.fullmatch(name) is None:
        shown = name if len(name) <= 64 else name[:64] + "…"
        raise NotFoundError(f"No agent named '{shown}'.", code="agent_not_found", param=param)
    return name


def agent_in_log(request: Request) -> None:
    """The access line names the agent a request was for, also when it is refused before the
    run starts (a 422 body, a 429 at admission, an unknown agent): a route dependency, so it
    runs before the body is validated."""
    name = request.path_params.get("name")
    if isinstance(name, str) and AGENT_NAME_RE.fullmatch(name) is not None:
        request.state.agent = name


@router.post(
    "/agents/{name}/runs",
    summary="Run an agent (plain or streamed)",
    dependencies=[Depends(agent_in_log)],
    responses=run_answer("The finished run, or the run paused for an approval."),
)
async def create_run(
    name: AgentName,
    body: RunRequest,
    request: Request,
    principal: RunsPrincipal,
    service: RunServiceDep,
) -> Response:
    known_name(name)
    stream = body.stream or accepts_event_stream(request.headers.getlist("accept"))
    sdk_input = request_input = body.sdk_input()
    # Owns the conversation's turn and the run: released and settled on leaving, unless a
    # streamed response took them over.
    async with AsyncExitStack() as owner:
        turn: Turn | None = None
        if body.conversation_id is not None:
            turn = await app_state(request).conversations.begin(
                principal, body.conversation_id, len(as_items(sdk_input))
            )
            owner.push_async_callback(turn.release)
            sdk_input = turn.input_with(sdk_input)
        run = service.start(principal, name, sdk_input, request_input=request_input)
        await owner.enter_async_context(run)
        run.handle.turn = turn
        admitted(request, run.handle)
        if stream:
            chunks = stream_run(run, sdk_input, keepalive_s=service.settings.stream_keepalive_s)
            return RunStreamResponse(chunks, owner.pop_all())
        result = await run_to_end(request, service, run, sdk_input)
    return Response(orjson.dumps(result), media_type="application/json")


def admitted(request: Request, handle: RunHandle) -> None:
    """An admitted run's token headers on the response, and its agent in the access log."""
    if handle.ticket is not None:
        add_headers(request.scope["state"], handle.ticket.token_headers())
    request.state.agent = handle.built.name


async def run_to_end(
    request: Request, service: RunService, run: Run, sdk_input: str | list[Any] | RunState[Any, Any]
) -> dict[str, Any]:
    """A plain run's result. Its answer, an error included (a run timeout, a failed model
    call after others were answered), shows the token and spend windows with the run's own
    tokens and cost counted, as OpenAI's headers count the request they answer: the windows
    as admission read them, less what this run used. A refusal's own headers (a mid-run 429
    reads the windows as it found them) take precedence."""
    try:
        result: dict[str, Any] = await service.run(run, sdk_input)
        return result
    finally:
        ticket = run.handle.ticket
        if ticket is not None:
            spent = run.handle.meter.total.total_tokens
            add_headers(request.scope["state"], ticket.token_headers(spent))


class RunStreamResponse(StreamingResponse):
    """A streamed run's response (never cached or buffered by a proxy); it owns the run.

    However the response ends, even when the client is gone before its first byte (the run's
    generators then never start, so their own `finally` never runs), `owner` is closed: the
    run settles (`cancelled` unless it already ended: in-flight gauge, usage record, lease)
    and the conversation's lock is released, exactly once.
    """

    def __init__(self, chunks: AsyncIterator[bytes], owner: AsyncExitStack) -> None:
        super().__init__(
            chunks,
            media_type="text/event-stream",
            headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
        )
        self.owner = owner

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            # The body's own `finally` first (a client gone while a model call is in flight
            # leaves that call to be read: `run.winding`). Starlette does not close it: when
            # the client left during a `send`, the generator was not where the cancellation
            # struck, and it would run its `finally` only when collected, after the run had
            # settled without the call's tokens.
            body = self.body_iterator
            if isinstance(body, AsyncGenerator):
                await body.aclose()
            # Closed as a clean exit whatever ended the response (a client gone mid-send is
            # a cancelled run, not a failed one).
            await self.owner.aclose()
