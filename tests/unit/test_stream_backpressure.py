"""The streamed run's buffer is bounded: a client that stops reading holds the producer after
`STREAM_BUFFER` encoded events instead of buffering the whole answer, and once it reads again
every event arrives, in order.

The producer here is a generator in place of `run_events` (the SDK side is covered by the live
tests in tests/faults/test_bounds.py): what is under test is the queue between the two tasks.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from types import SimpleNamespace
from typing import Any, cast

import pytest

from gateway.runs import streaming
from gateway.runs.lifecycle import Run
from gateway.runs.meter import RunMeter
from gateway.runs.streaming import STREAM_BUFFER, stream_run

EVENTS = 10_000


def _run(grace_s: float = 30.0) -> Any:
    """A run as `stream_run` sees it: its meter (no call in flight), the gone flag, the
    wind-down grace of its settings."""
    settings = SimpleNamespace(stream_disconnect_grace_s=grace_s)
    run = Run(cast(Any, SimpleNamespace(settings=settings)), cast(Any, None))
    run._handle = cast(Any, SimpleNamespace(meter=RunMeter("m")))
    return run


async def test_a_client_that_stops_reading_holds_the_producer(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    produced = 0

    async def events(handle: Any, sdk_input: Any) -> AsyncIterator[tuple[str, Any]]:
        nonlocal produced
        for i in range(EVENTS):
            produced += 1
            yield "output_text.delta", {"delta": f"w{i} "}

    monkeypatch.setattr(streaming, "run_events", events)
    stream = stream_run(cast(Any, _run()), "hi", keepalive_s=60)
    first = await anext(stream)
    assert b"w0 " in first
    await asyncio.sleep(0.2)  # the producer runs as far as the queue lets it
    # In the queue, plus the one waiting in `put`, plus the one the consumer took.
    assert produced <= STREAM_BUFFER + 2, produced
    held = produced
    await asyncio.sleep(0.2)
    assert produced == held, "the producer waits while nobody reads"

    rest = [chunk async for chunk in stream]
    assert produced == EVENTS
    assert len(rest) == EVENTS - 1
    assert b"w9999 " in rest[-1]
    assert all(f"w{i + 1} ".encode() in chunk for i, chunk in enumerate(rest))


async def test_leaving_while_the_producer_waits_closes_the_run_at_once(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The client leaves while the producer waits for room: the producer's generator (whose
    `finally` cancels the SDK run and settles it) is closed then, not when it is collected."""
    closed = asyncio.Event()
    keep: list[Any] = []  # a reference elsewhere: collection would never close it

    async def events(handle: Any, sdk_input: Any) -> AsyncIterator[tuple[str, Any]]:
        try:
            for i in range(EVENTS):
                yield "output_text.delta", {"delta": str(i)}
        finally:
            closed.set()

    def tracked(handle: Any, sdk_input: Any) -> AsyncIterator[tuple[str, Any]]:
        generator = events(handle, sdk_input)
        keep.append(generator)
        return generator

    monkeypatch.setattr(streaming, "run_events", tracked)
    stream = stream_run(cast(Any, _run()), "hi", keepalive_s=60)
    await anext(stream)
    await asyncio.sleep(0.05)  # the producer now waits in `put`: the queue is full
    await stream.aclose()  # what Starlette does when the client goes away
    async with asyncio.timeout(2):
        await closed.wait()


async def test_leaving_while_the_upstream_answers_lets_the_producer_finish_the_call(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The client leaves while a model call is being answered: the producer is not cancelled
    but reads on, sending nothing (the queue is emptied, so a producer waiting for room goes
    on), and the run's `winding` is that task, done when the producer's events end."""
    run = _run()
    meter = run.handle.meter
    produced = 0

    async def events(handle: Any, sdk_input: Any) -> AsyncIterator[tuple[str, Any]]:
        nonlocal produced
        for i in range(EVENTS):
            produced += 1
            if i == 200:
                meter._calls.clear()  # the call ended: on_llm_end
            yield "output_text.delta", {"delta": str(i)}
            await asyncio.sleep(0)

    monkeypatch.setattr(streaming, "run_events", events)
    meter._calls[1] = (0.0, "m", None)  # the upstream is answering a call in flight
    stream = stream_run(cast(Any, run), "hi", keepalive_s=60)
    await anext(stream)
    await asyncio.sleep(0.05)  # the producer now waits in `put`: the queue is full
    await stream.aclose()  # the client went away
    assert run.client_gone and meter.stopping
    assert run.winding is not None
    async with asyncio.timeout(5):
        await asyncio.wait((run.winding,))
    assert not run.winding.cancelled()
    assert produced == EVENTS  # read to the end, nothing queued for nobody


async def test_a_call_whose_answer_has_not_begun_is_waited_for(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A call in flight whose answer has not begun when the client leaves is read too, once
    it comes, within the grace: the upstream has the request and bills it, and its usage comes
    only with its answer. (It was cut after 0.25 s without a first byte: on a slow host or
    upstream its tokens were lost while the upstream counted them.)"""
    run = _run(grace_s=5)
    meter = run.handle.meter
    meter._calls[1] = (0.0, "m", None)  # in flight, no answer begun

    async def events(handle: Any, sdk_input: Any) -> AsyncIterator[tuple[str, Any]]:
        yield "run.created", {}
        await asyncio.sleep(1.0)  # the upstream takes a second to begin
        meter._calls.clear()  # answered and metered: on_llm_end
        yield "output_text.delta", {"delta": "read to its end"}

    monkeypatch.setattr(streaming, "run_events", events)
    stream = stream_run(cast(Any, run), "hi", keepalive_s=60)
    await anext(stream)
    await stream.aclose()
    assert run.client_gone and run.winding is not None
    async with asyncio.timeout(5):
        await asyncio.wait((run.winding,))
    assert not run.winding.cancelled()
    assert not meter._calls


async def test_a_wind_down_past_its_grace_is_cut(monkeypatch: pytest.MonkeyPatch) -> None:
    """A call still being read when the grace is over (a stalled upstream) is cut: the
    producer is cancelled, so the run's slot is not held past GATEWAY_STREAM_DISCONNECT_GRACE_S."""
    run = _run(grace_s=0.2)
    meter = run.handle.meter

    async def events(handle: Any, sdk_input: Any) -> AsyncIterator[tuple[str, Any]]:
        yield "output_text.delta", {"delta": "first"}
        await asyncio.sleep(60)  # the upstream stalls
        yield "output_text.delta", {"delta": "late"}

    monkeypatch.setattr(streaming, "run_events", events)
    meter._calls[1] = (0.0, "m", None)
    stream = stream_run(cast(Any, run), "hi", keepalive_s=60)
    await anext(stream)
    await stream.aclose()
    assert run.winding is not None
    async with asyncio.timeout(5):
        await asyncio.wait((run.winding,))
    assert run.winding.cancelled()
