"""`GET /v1/agents/{name}/ws`: multi-turn chat with an agent over one WebSocket.

Handshake: the credential of the HTTP API (`Authorization: Bearer`, `X-API-Key`, or, for a
browser, which cannot set headers, the offered subprotocol `bearer.<token>`), resolved by
`current_principal`, with the `runs` scope; a client offering the `agent-gateway` subprotocol
gets it back (a browser fails a handshake that offered subprotocols and got none back). A bad
credential, a suspended tenant or a missing scope refuses the handshake with the HTTP API's
own 401 / 403 JSON body (the ASGI denial response; a server without it gets a close 1008
instead). An unknown agent (also another tenant's) is accepted, sent an `error` event
`agent_not_found` and closed with 1008.

Frames: the client sends JSON text `{"input": "…" | [{"role", "content"}], "conversation_id"?}`
(the bounds of a run request). Each frame is one turn; the server answers with JSON text
frames `{"event": name, "data": {…}}`, exactly the SSE events of a streamed run, ending with
`run.completed` or `run.failed`. A valid turn refused by a limit (request limit, token quotas,
concurrency), a busy or unknown conversation or the upstream ends with `run.failed`. A frame
that is not a turn (invalid JSON, a schema violation or unknown field, binary, larger than
`GATEWAY_MAX_BODY_BYTES`, sent while a turn runs, or a history that is full) gets an `error`
event `{"error": {…}}` and is dropped; the socket stays open either way.

History: without `conversation_id` the socket remembers its completed turns in memory (at
most `MAX_MESSAGES` items; a turn paused for approval is resumed over HTTP and is not one of
them); with one, the turn runs on the server-side conversation (lock, stored history, append)
as a run does. The credential is resolved again for every turn, so a revoked
key or suspended tenant stops the socket at its next turn (`run.failed`, close 1008).

Idle sockets get nothing from the gateway: uvicorn's WebSocket pings keep them alive.

Shutdown (SIGTERM, see gateway/core/drain.py): once the replica stops accepting, an idle socket
is closed with 1012 (service restart: the client reconnects, reaching another replica) and a
socket with a turn in flight is closed with 1012 right after that turn's terminal event; a turn
still running at the end of the grace ends with `run.failed` `shutting_down` first. When the
client leaves mid-turn the turn's task is cancelled: `run_events` cancels the SDK run and
settles it as `cancelled` with the tokens already spent, as for an SSE disconnect; as there,
a model call in flight is first read to its end (sending nothing), so its
tokens are recorded, and the run stops right after it.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
from contextlib import aclosing
from typing import Any

import orjson
from fastapi import APIRouter, WebSocket
from fastapi.responses import JSONResponse
from pydantic import ValidationError
from starlette.websockets import WebSocketDisconnect

from gateway.auth.dependencies import current_principal
from gateway.auth.principal import Principal
from gateway.conversations.service import ConversationTurns, Turn, as_items
from gateway.core.drain import Drain
from gateway.core.errors import (
    AuthenticationFailedError,
    ConflictError,
    GatewayError,
    InvalidRequestError,
    NotFoundError,
    PermissionDeniedError,
    text_length_message,
)
from gateway.core.json_body import JsonBodyRoute, parse_json
from gateway.core.state import app_state
from gateway.core.unions import is_tag
from gateway.limits.requests import RequestLimiter, RequestLimitExceeded
from gateway.runs.lifecycle import Run
from gateway.runs.schemas import MAX_MESSAGES, TurnInput
from gateway.runs.service import RunService
from gateway.runs.streaming import run_events
from tenants.agent.spec import AGENT_NAME_PATTERN

router = APIRouter(route_class=JsonBodyRoute, tags=["runs"])
logger = logging.getLogger("gateway.runs.websocket")

POLICY_VIOLATION = 1008
SERVICE_RESTART = 1012
MAX_QUERY_BYTES = 2048
"""The socket takes no query parameters: anything longer than this is refused."""
SUBPROTOCOL = "agent-gateway"
"""The subprotocol a client may offer beside its `bearer.<token>`; answered when offered."""
TERMINAL = frozenset({"run.completed", "run.failed", "run.requires_action"})
GONE = (WebSocketDisconnect, RuntimeError, OSError)
"""What sending on a socket the client has left raises (Starlette / uvicorn)."""


@router.get("/agents/{name}/ws", include_in_schema=False)
async def agent_socket_without_upgrade(name: str) -> JSONResponse:
    """A plain HTTP GET of the socket's route: 426 naming the upgrade it takes (RFC 9110
    15.5.22), not a 404 that says the route is not there. Nothing is looked up."""
    error = InvalidRequestError(
        "This route is a WebSocket: open it with a WebSocket handshake (`Upgrade: websocket`).",
        code="websocket_upgrade_required",
    )
    return JSONResponse(
        error.body(), status_code=426, headers={"Upgrade": "websocket", "Connection": "Upgrade"}
    )


@router.websocket("/agents/{name}/ws")
async def agent_socket(websocket: WebSocket, name: str) -> None:
    try:
        if len(websocket.scope.get("query_string", b"")) > MAX_QUERY_BYTES:
            raise InvalidRequestError("The query string is too long.", code="query_too_long")
        principal = await authorize(websocket)
    except GatewayError as exc:
        await refuse(websocket, exc)
        return
    offered = websocket.scope.get("subprotocols") or []
    await websocket.accept(subprotocol=SUBPROTOCOL if SUBPROTOCOL in offered else None)
    service = app_state(websocket).runs
    try:
        if re.fullmatch(AGENT_NAME_PATTERN, name) is None:
            raise NotFoundError(f"No agent named '{name[:64]}'.", code="agent_not_found")
        await service.resolve(principal, name)
    except (NotFoundError, PermissionDeniedError) as exc:
        await send_event(websocket, "error", exc.body())
        await websocket.close(POLICY_VIOLATION)
        return
    await AgentSocket(websocket, name).serve()


async def authorize(websocket: WebSocket) -> Principal:
    """The socket's principal with the `runs` scope (401 / 403 / 429 otherwise)."""
    principal = await current_principal(websocket)
    if "runs" not in principal.scopes:
        raise PermissionDeniedError("This credential lacks the 'runs' scope.", code="missing_scope")
    return principal


async def refuse(websocket: WebSocket, error: GatewayError) -> None:
    """Refuse the handshake with the HTTP API's error response (or 1008 without the
    extension)."""
    if "websocket.http.response" in websocket.scope.get("extensions", {}):
        response = JSONResponse(error.body(), status_code=error.status_code, headers=error.headers)
        await websocket.send_denial_response(response)
    else:
        await websocket.close(POLICY_VIOLATION)


async def send_event(websocket: WebSocket, event: str, data: Any) -> None:
    await websocket.send_text(orjson.dumps({"event": event, "data": data}).decode())


class AgentSocket:
    """One accepted socket: reads frames, runs one turn at a time, remembers its history."""

    def __init__(self, websocket: WebSocket, name: str) -> None:
        state = app_state(websocket)
        self.websocket = websocket
        self.name = name
        self.runs: RunService = state.runs
        self.turns: ConversationTurns = state.conversations
        self.limiter: RequestLimiter = state.request_limiter
        self.max_frame_bytes: int = state.settings.max_body_bytes
        self.max_json_depth: int = state.settings.max_json_depth
        self.history: list[Any] = []
        self.busy = False
        self.tasks: set[asyncio.Task[None]] = set()
        self.sending = asyncio.Lock()
        self.drain: Drain = state.drain
        self.closed = False
        self.running: dict[asyncio.Task[None], Run] = {}
        """The run of each turn task, once admitted."""

    async def serve(self) -> None:
        """Read frames until the client leaves; then cancel the turn in flight."""
        unsubscribe = self.drain.on_stop(self._on_stop)
        try:
            while True:
                message = await self.websocket.receive()
                if message["type"] == "websocket.disconnect":
                    return
                await self.on_frame(message.get("text"))
        except GONE:
            return  # the turn closed the socket, or the client left while we answered
        finally:
            unsubscribe()
            for task in self.tasks:
                run = self.running.get(task)
                if run is not None and run.handle.meter.stop_after_call():
                    run.client_gone = True  # the turn reads that call to its end, silently
                    run.wind_down_within(task, run.service.settings.stream_disconnect_grace_s)
                else:
                    task.cancel()
            await asyncio.gather(*self.tasks, return_exceptions=True)

    async def send(self, event: str, data: Any) -> None:
        async with self.sending:  # the reader and the turn both send
            await send_event(self.websocket, event, data)

    async def on_frame(self, text: str | None) -> None:
        """Start a turn for a valid frame; answer anything else with an `error` event."""
        if self.drain.stopping:
            await self.close_for_restart()
            return
        try:
            message = self.parse(text)
        except GatewayError as exc:
            await self.send("error", exc.body())
            return
        self.busy = True
        task = asyncio.get_running_loop().create_task(self.turn(message))
        self.tasks.add(task)
        task.add_done_callback(self._done)

    def parse(self, text: str | None) -> TurnInput:
        if text is None:
            raise InvalidRequestError("Frames must be JSON text.", code="invalid_frame")
        if len(text) > self.max_frame_bytes or len(text.encode()) > self.max_frame_bytes:
            raise InvalidRequestError(
                f"A frame may hold at most {self.max_frame_bytes} bytes.", code="frame_too_large"
            )
        if self.busy:
            raise ConflictError(
                "A turn is already in progress on this socket; wait for its run.completed "
                "or run.failed.",
                code="turn_in_progress",
            )
        try:
            message = TurnInput.model_validate(parse_json(text, self.max_json_depth))
        except json.JSONDecodeError as exc:
            raise InvalidRequestError(
                f"The frame is not valid JSON: {exc.msg}.", code="invalid_json"
            ) from None
        except ValidationError as exc:
            first = exc.errors()[0]
            if first["type"] == "model_type":  # `[]`, `null`, a string: not an object at all
                raise InvalidRequestError(
                    'A frame is a JSON object: {"input": …}.', code="invalid_value"
                ) from None
            param = ".".join(str(part) for part in first["loc"] if not is_tag(part)) or None
            detail = text_length_message(dict(first)) or first["msg"]
            text_of = f"{param}: {detail}" if param else detail
            raise InvalidRequestError(text_of, code="invalid_value", param=param) from None
        if message.conversation_id is None:
            size = len(self.history) + len(as_items(message.sdk_input()))
            if size > MAX_MESSAGES:
                raise InvalidRequestError(
                    f"This socket's conversation would be too long: it holds "
                    f"{len(self.history)} items, this turn adds {size - len(self.history)} and "
                    f"the limit is {MAX_MESSAGES}; send less, open a new socket or use a "
                    "server-side conversation.",
                    code="conversation_too_long",
                )
        return message

    async def turn(self, message: TurnInput) -> None:
        """One turn: its events, ending with `run.completed` or `run.failed`."""
        turn: Turn | None = None
        ended = False
        try:
            principal = await self.admit()
            sdk_input = request_input = message.sdk_input()
            remember = None
            if message.conversation_id is not None:
                turn = await self.turns.begin(
                    principal, message.conversation_id, len(as_items(sdk_input))
                )
                sdk_input = turn.input_with(sdk_input)
            else:
                if self.history:
                    sdk_input = [*self.history, *as_items(sdk_input)]
                remember = self.remember
            run = self.runs.start(principal, self.name, sdk_input, request_input=request_input)
            # The run ends before its terminal event is sent; leaving this block earlier (the
            # client gone, the socket closed) settles it as cancelled.
            async with (
                run,
                aclosing(run_events(run, sdk_input, on_complete=remember)) as events,
            ):
                run.handle.turn = turn
                task = asyncio.current_task()
                if task is not None:
                    self.running[task] = run
                async for event, data in events:
                    if run.client_gone:
                        continue  # winding down: nobody reads
                    if event in TERMINAL:
                        ended = True
                        await self.end(turn, event, data)
                        turn = None
                    else:
                        await self.send(event, data)
        except GatewayError as exc:  # refused before the run started
            ended = True
            await self.end(turn, "run.failed", exc.stream_body())
            turn = None
            if isinstance(exc, AuthenticationFailedError | PermissionDeniedError):
                await self.websocket.close(POLICY_VIOLATION)
        finally:
            if not ended:  # once ended, the next turn may already be running
                self.busy = False
            if turn is not None:
                await turn.release()

    async def admit(self) -> Principal:
        """The credential again (revocations apply) and the request limit for this turn."""
        principal = await authorize(self.websocket)
        try:
            await self.limiter.check(principal)
        except RequestLimitExceeded as exc:
            raise exc.error from None
        return principal

    async def end(self, turn: Turn | None, event: str, data: Any) -> None:
        """Free the socket (and the conversation) before the client sees the turn end, so
        that its next frame is never refused as `turn_in_progress`."""
        if turn is not None:
            await turn.release()
        self.busy = False
        await self.send(event, data)
        if self.drain.stopping:
            await self.close_for_restart()

    def _on_stop(self) -> None:
        """The replica stops accepting: an idle socket closes now, a busy one after its turn."""
        if not self.busy:
            task = asyncio.get_running_loop().create_task(self.close_for_restart())
            self.tasks.add(task)
            task.add_done_callback(self._done)

    async def close_for_restart(self) -> None:
        """Close with 1012: the client reconnects (to a replica that is not shutting down)."""
        async with self.sending:
            if not self.closed:
                self.closed = True
                await self.websocket.close(SERVICE_RESTART)

    def remember(self, result: Any) -> None:
        self.history = list(result.to_input_list())

    def _done(self, task: asyncio.Task[None]) -> None:
        self.tasks.discard(task)
        self.running.pop(task, None)
        if task.cancelled():
            return
        exc = task.exception()
        if exc is not None and not isinstance(exc, GONE):
            logger.error("websocket turn failed", exc_info=exc)
