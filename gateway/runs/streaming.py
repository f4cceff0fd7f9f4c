"""Streamed runs: one producer of run events, encoders for each wire format.

`run_events` drives the SDK stream and yields structured `(name, data)` events: `run.created`,
`output_text.delta`, `tool.called`, `tool.output`, `agent.handoff`, then exactly one of
`run.completed` / `run.failed`. `stream_run` runs that producer in its own task and turns each
event into bytes with an `Encoder`: `sse` (the default) gives the runs API its named SSE
events; `gateway.chat.stream` encodes the same events as Chat Completions chunks.

An agent with `output.blocked_patterns` has its text deltas held until the final answer
passed them (then sent, followed by `run.completed`; dropped when `run.failed` follows), so
blocked text never reaches the client. Text a model wrote beside a tool call or a handoff is
not the final answer and is never sent: the streamed text is the answer the patterns passed.
A keep-alive comment goes out whenever nothing else has for `keepalive_s`. If the client goes
away, Starlette cancels the response task (and the response closes this generator). When a model
call is in flight at that moment, the run winds down: the producer keeps reading that call to
its end (the upstream has it and bills it, answering yet or not), sending nothing, its usage is
metered, and the run stops right after it (no tool of the answer runs, no further call is made:
`RunMeter.stop_after_call`); a call not done within `GATEWAY_STREAM_DISCONNECT_GRACE_S` is cut.
Otherwise (a tool running) the producer task is cancelled at once and the `finally` in
`run_events` cancels the SDK run (breaking out of its event loop alone would not stop it).
Either way the run's owner (the response) settles it as `cancelled` with the tokens spent.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncGenerator, AsyncIterator, Callable
from contextlib import aclosing
from typing import Any

import orjson
from agents import Runner, RunState
from agents.result import RunResultStreaming

from gateway.runs.checks import check_input, check_output, stored_items
from gateway.runs.failures import map_run_error, run_status
from gateway.runs.lifecycle import Run
from gateway.runs.meter import ClientGone
from gateway.runs.objects import run_object
from observability.metrics import record_first_token

KEEPALIVE = b": keep-alive\n\n"
STREAM_BUFFER = 64
"""Encoded events waiting for a slow client, at most: past it the producer waits (and the
SDK's own queue holds the rest of the current model response), so a client that reads
slowly costs at most this and one model response of memory."""

RunEvent = tuple[str, Any]
"""`(name, data)`: one of the event names above and its JSON-able payload."""
Encoder = Callable[[str, Any], bytes | None]
"""Turns one run event into bytes for the wire (None: nothing to send for it)."""


def sse(event: str, data: Any) -> bytes:
    """One named SSE event with a JSON payload (the runs API's encoder)."""
    return b"event: " + event.encode() + b"\ndata: " + orjson.dumps(data) + b"\n\n"


def tool_output_text(output: Any) -> str:
    """A tool's output as the text the model read: an HTTP tool's is already text; an MCP
    tool's is content parts (`{"type": "text", "text": …}`, a cut one followed by the marker),
    whose texts are joined; anything else is its JSON (never a Python repr)."""
    if isinstance(output, str):
        return output
    parts = output if isinstance(output, list) else [output]
    texts = [_part_text(part) for part in parts]
    if all(text is not None for text in texts):
        return "".join(text for text in texts if text is not None)
    return orjson.dumps(
        output, default=lambda o: getattr(o, "model_dump", lambda: str(o))()
    ).decode()


def _part_text(part: Any) -> str | None:
    """The text of a text content part (a dict or an SDK object), else None."""
    kind = part.get("type") if isinstance(part, dict) else getattr(part, "type", None)
    text = part.get("text") if isinstance(part, dict) else getattr(part, "text", None)
    return text if kind in ("text", "input_text", "output_text") and isinstance(text, str) else None


def _translate(event: Any) -> RunEvent | None:
    """SDK stream event -> our run event (None for events clients do not need)."""
    if event.type == "raw_response_event":
        data = event.data
        if getattr(data, "type", None) == "response.output_text.delta":
            return "output_text.delta", {"delta": data.delta}
        return None
    if event.type != "run_item_stream_event":
        return None
    item = event.item
    raw = getattr(item, "raw_item", None)
    if event.name == "tool_called":
        return "tool.called", {
            "name": getattr(raw, "name", None),
            "call_id": getattr(raw, "call_id", None),
            "arguments": getattr(raw, "arguments", None),
        }
    if event.name == "tool_output":
        call_id = raw.get("call_id") if isinstance(raw, dict) else getattr(raw, "call_id", None)
        return "tool.output", {"call_id": call_id, "output": tool_output_text(item.output)}
    if event.name == "handoff_occured":
        return "agent.handoff", {"from": item.source_agent.name, "to": item.target_agent.name}
    return None


async def run_events(
    run: Run,
    sdk_input: str | list[Any] | RunState[Any, Any],
    *,
    on_complete: Callable[[RunResultStreaming], None] | None = None,
) -> AsyncGenerator[RunEvent]:
    """The events of one streamed run; the run is ended before its terminal event.

    `on_complete` sees the finished result (before the end): the WebSocket keeps its
    in-memory history with it. A consumer that leaves early leaves the run to its owner's
    exit (settled `cancelled`).
    """
    handle = run.handle
    service = run.service
    status = "cancelled"
    output: Any = None
    paused: dict[str, Any] | None = None
    result: RunResultStreaming | None = None
    # With output patterns, no text reaches the client before the answer passed them.
    held: list[RunEvent] | None = [] if handle.built.output_checks else None
    try:
        yield "run.created", run_object(handle, None, status="in_progress")
        await check_input(handle)
        run.enter_scope()
        result = Runner.run_streamed(
            handle.built.agent,
            sdk_input,
            max_turns=handle.built.max_turns,
            hooks=handle.meter,
            run_config=run.run_config(),
            context=run.tool_context(),
        )
        first_token = True
        events = aiter(result.stream_events())
        while True:
            # Only the wait for the SDK's next event is bounded by the shutdown deadline and
            # the run's own (never the yield: the consumer's own awaits must not be
            # interrupted from here).
            deadline = run.deadline()
            try:
                async with service.drain.until_deadline(), deadline:
                    event = await anext(events, None)
            except TimeoutError:
                if deadline.expired():
                    raise run.timed_out() from None
                raise
            if event is None:
                break
            translated = _translate(event)
            if translated is not None:
                if translated[0] == "output_text.delta":
                    if first_token:
                        first_token = False
                        record_first_token(
                            handle.principal.tenant_slug,
                            handle.built.name,
                            time.perf_counter() - handle.started,
                        )
                    if held is not None:
                        held.append(translated)
                        continue
                elif held and translated[0] in ("tool.called", "agent.handoff"):
                    # The text held so far came with a tool call or a handoff: not the final
                    # answer, which alone is checked, so it is never sent.
                    held.clear()
                yield translated
        if result.interruptions:
            paused = await service.pause(handle, result)
            status = "requires_action"
        else:
            await check_output(handle, result)
            if handle.turn is not None:
                await handle.turn.append(await stored_items(handle, result))
            if on_complete is not None:
                on_complete(result)
            status = "completed"
            output = result.final_output
        await run.end(status)  # lease released before the client sees the end
    except Exception as exc:
        if run.client_gone or isinstance(exc, ClientGone):
            # Wound down after its client left (the SDK may wrap `ClientGone`): nobody to tell.
            await run.end("cancelled")
            await service.ended(handle, "cancelled", None)
            return
        status = run_status(exc)
        error = map_run_error(
            exc, model=handle.built.model, max_turns=handle.built.max_turns, meter=handle.meter
        )
        await run.end(status)
        await service.ended(handle, status, None, error)
        yield "run.failed", error.stream_body()
        return
    finally:
        if result is not None:
            result.cancel()
    if paused is not None:
        yield "run.requires_action", paused
        return
    await service.ended(handle, status, output)
    for delta in held or ():
        yield delta
    yield "run.completed", run_object(handle, output)


async def stream_run(
    run: Run,
    sdk_input: str | list[Any] | RunState[Any, Any],
    *,
    keepalive_s: float,
    encode: Encoder = sse,
) -> AsyncIterator[bytes]:
    """The byte stream of a run in `encode`'s format, with keep-alive comments while the run
    is quiet.

    The run is produced by its own task so that waiting for a keep-alive never cancels the SDK
    stream; the two share a bounded queue (backpressure: `STREAM_BUFFER`). When the response
    ends for any reason (including the client leaving), the task is cancelled, or, when the
    upstream is answering a call, left to read that call to its end (`run.winding`, awaited
    by the run's owner before it settles).
    """
    queue: asyncio.Queue[bytes | None] = asyncio.Queue(maxsize=STREAM_BUFFER)

    async def produce() -> None:
        try:
            # Closed explicitly: a consumer that leaves while this waits in `put` cancels it
            # here, outside the generator, whose `finally` (cancel the SDK run, settle) must
            # run now, not whenever the generator is collected.
            async with aclosing(run_events(run, sdk_input)) as events:
                async for name, data in events:
                    if run.client_gone:
                        continue  # winding down: nobody reads
                    chunk = encode(name, data)
                    if chunk is not None:
                        await queue.put(chunk)  # a slow client holds the producer here
        finally:
            task = asyncio.current_task()
            if task is None or not task.cancelling():  # cancelled: the consumer has gone
                await queue.put(None)

    task = asyncio.get_running_loop().create_task(produce())
    ended = False
    try:
        while True:
            try:
                async with asyncio.timeout(keepalive_s):
                    chunk = await queue.get()
            except TimeoutError:
                yield KEEPALIVE
                continue
            if chunk is None:
                ended = True
                break
            yield chunk
    finally:
        if not ended and not task.done() and run.handle.meter.stop_after_call():
            run.client_gone = True
            while not queue.empty():  # a producer waiting to put goes on
                queue.get_nowait()
            run.wind_down_within(task, run.service.settings.stream_disconnect_grace_s)
        else:
            task.cancel()


def accepts_event_stream(accept: str | list[str] | None) -> bool:
    """True when the `Accept` header asks for `text/event-stream` at least as much as for
    `application/json`.

    Several header lines are one list (RFC 9110 §5.3). Media types are case-insensitive and
    weighed by `q` (RFC 9110 §12.5.1): `text/event-stream` streams, also beside an equally
    weighed `application/json` (a client ready for either); `;q=0` refuses it, and
    `application/json` weighed more (named, or through `application/*` or `*/*`, the most
    specific range that matches counting) prefers the plain JSON run. Wildcards alone do not
    ask for a stream.
    """
    if isinstance(accept, list):
        accept = ", ".join(accept)
    if not accept or "text/event-stream" not in accept.lower():
        return False
    weights: dict[str, float] = {}
    for entry in accept.lower().split(","):
        media, *params = (part.strip() for part in entry.split(";"))
        if media not in _WEIGHED:
            continue
        weight = 1.0
        for param in params:
            name, _, value = param.partition("=")
            if name.strip() == "q":
                try:
                    weight = min(1.0, max(0.0, float(value)))
                except ValueError:
                    weight = 0.0  # a malformed weight is no preference
        weights[media] = max(weights.get(media, 0.0), weight)
    sse = weights.get("text/event-stream", 0.0)
    json = next(
        (weights[m] for m in ("application/json", "application/*", "*/*") if m in weights), 0.0
    )
    return sse > 0 and sse >= json


_WEIGHED = frozenset({"text/event-stream", "application/json", "application/*", "*/*"})
