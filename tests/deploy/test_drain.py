"""Graceful drain of a real `gateway serve` process on SIGTERM: plain runs, SSE streams and
WebSocket turns in flight finish within the grace, or end with `shutting_down` at its end;
`/readyz` fails at once, the listener closes after the drain delay, the process exits 0, every
run is recorded and its concurrency lease released (another replica admits at once)."""

from __future__ import annotations

import asyncio
import json
import secrets
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from tests.deploy.replicas import (
    Replica,
    in_flight,
    replica_env,
    seed_tenant,
    sse_events,
    usage_records,
    wait_for,
)
from tests.waiting import eventually


@pytest.fixture
def env_for(postgres_url: str, mock_llm_base_url: str, redis_url: str, redis_prefix: str) -> Any:
    def make(**extra: str) -> dict[str, str]:
        return replica_env(postgres_url, mock_llm_base_url, redis_url, redis_prefix, **extra)

    return make


@pytest.fixture
def replicas() -> Iterator[list[Replica]]:
    started: list[Replica] = []
    yield started
    for replica in started:
        replica.stop()


async def plain_run(url: str, key: str, text: str) -> httpx.Response:
    async with httpx.AsyncClient(timeout=120) as client:
        return await client.post(
            f"{url}/v1/agents/assistant/runs",
            json={"input": text},
            headers={"Authorization": f"Bearer {key}"},
        )


async def sse_run(url: str, key: str, text: str) -> list[tuple[str, Any]]:
    async with httpx.AsyncClient(timeout=120) as client:
        r = await client.post(
            f"{url}/v1/agents/assistant/runs",
            json={"input": text, "stream": True},
            headers={"Authorization": f"Bearer {key}"},
        )
        assert r.status_code == 200, r.text
        return sse_events(r.text)


async def ws_turn(url: str, key: str, text: str) -> tuple[list[tuple[str, Any]], int | None]:
    """The events of one turn, and the close code the server sent afterwards."""
    ws_url = url.replace("http://", "ws://") + "/v1/agents/assistant/ws"
    events: list[tuple[str, Any]] = []
    async with connect(
        ws_url, additional_headers={"Authorization": f"Bearer {key}"}, open_timeout=10
    ) as ws:
        await ws.send(json.dumps({"input": text}))
        try:
            while True:
                message = json.loads(await asyncio.wait_for(ws.recv(), timeout=120))
                events.append((message["event"], message["data"]))
        except ConnectionClosed as closed:
            return events, None if closed.rcvd is None else closed.rcvd.code
    return events, None


async def poll(predicate: Any, what: str, timeout_s: float = 15.0) -> float:
    """Wait until `predicate()` (run in a thread: the clients' tasks go on meanwhile); the
    monotonic time it held."""
    await eventually(lambda: asyncio.to_thread(predicate), timeout=timeout_s, what=what)
    return time.monotonic()


def start_pair(
    replicas: list[Replica], env_for: Any, tmp_path: Path, workers: int, **drain: str
) -> tuple[Replica, Replica]:
    """The replica under test (drain settings) and a second one sharing PG and Redis."""
    a = Replica(env_for(**drain), tmp_path / "a.log", workers=workers)
    b = Replica(env_for(), tmp_path / "b.log")
    replicas.extend([a, b])
    return a.wait_ready(), b.wait_ready()


def refused(url: str) -> bool:
    """True when a new connection is refused (not accepted and left unanswered)."""
    try:
        httpx.get(url + "/healthz", timeout=1)
    except httpx.ConnectError:
        return True
    except httpx.TransportError:
        return False  # accepted by the kernel, never served: a balancer's request is lost
    return False


@pytest.mark.parametrize("workers", [1, 2])
async def test_in_flight_runs_and_streams_finish_within_the_grace(
    replicas: list[Replica], env_for: Any, tmp_path: Path, workers: int
) -> None:
    a, b = start_pair(
        replicas,
        env_for,
        tmp_path,
        workers,
        GATEWAY_DRAIN_DELAY_S="1.5",
        GATEWAY_SHUTDOWN_GRACE_S="20",
    )
    slug = f"drain-{secrets.token_hex(3)}"
    tenant = seed_tenant(a.url, slug, {"max_concurrent_runs": 4})
    key, slow = tenant["key"], "Hello [[latency:3000]]"
    runs = [
        asyncio.create_task(plain_run(a.url, key, slow)),
        asyncio.create_task(sse_run(a.url, key, slow)),
        asyncio.create_task(ws_turn(a.url, key, slow)),
    ]
    await poll(lambda: in_flight(a.url, slug) == 3, "three runs in flight")

    sigterm = a.signal(signal.SIGTERM)
    not_ready = await poll(lambda: a.status("/readyz") == 503, "/readyz 503")
    assert not_ready - sigterm < 1.0
    # Until the delay is over the replica still serves, asking clients to reconnect elsewhere.
    late = await plain_run(a.url, key, "Hi")
    assert late.status_code == 200 and late.headers["connection"] == "close"
    assert a.status("/healthz") == 200
    closed = await poll(lambda: refused(a.url), "new connections to be refused")
    assert 1.5 - 0.2 <= closed - sigterm < 1.5 + 2.0
    # Refused while the runs are still in flight: with several workers the supervisor's copy
    # of the listening socket must be closed too, or the kernel keeps accepting connections no
    # worker will ever read until the process exits.
    assert not any(run.done() for run in runs)
    assert refused(a.url)

    plain, sse, (ws_events, ws_close) = await asyncio.gather(*runs)
    assert plain.status_code == 200 and plain.json()["status"] == "completed"
    assert sse[-1][0] == "run.completed"
    assert ws_events[-1][0] == "run.completed"
    assert ws_close == 1012  # then the socket is closed: "service restart", reconnect
    assert await asyncio.to_thread(a.wait_exit) == 0
    assert time.monotonic() - sigterm < 15, "finished runs do not wait for the grace"

    records = usage_records(b.url, tenant["id"])
    assert sorted(r["status"] for r in records) == ["completed"] * 4


@pytest.mark.parametrize("workers", [1, 2])
async def test_streams_still_open_at_the_deadline_end_with_shutting_down(
    replicas: list[Replica], env_for: Any, tmp_path: Path, workers: int
) -> None:
    a, b = start_pair(
        replicas,
        env_for,
        tmp_path,
        workers,
        GATEWAY_DRAIN_DELAY_S="0.5",
        GATEWAY_SHUTDOWN_GRACE_S="1.5",
    )
    slug = f"deadline-{secrets.token_hex(3)}"
    tenant = seed_tenant(a.url, slug, {"max_concurrent_runs": 3})
    key, stuck = tenant["key"], "Hello [[latency:60000]]"
    runs = [
        asyncio.create_task(plain_run(a.url, key, stuck)),
        asyncio.create_task(sse_run(a.url, key, stuck)),
        asyncio.create_task(ws_turn(a.url, key, stuck)),
    ]
    await poll(lambda: in_flight(a.url, slug) == 3, "three runs in flight")

    sigterm = a.signal(signal.SIGTERM)
    plain, sse, (ws_events, ws_close) = await asyncio.gather(*runs)
    ended = time.monotonic()
    assert 0.5 + 1.5 - 0.2 <= ended - sigterm < 0.5 + 1.5 + 5
    assert plain.status_code == 503, plain.text
    assert plain.json()["error"]["code"] == "shutting_down"
    assert plain.headers["retry-after"] == "1"
    assert sse[0][0] == "run.created"
    assert sse[-1][0] == "run.failed" and sse[-1][1]["error"]["code"] == "shutting_down"
    assert ws_events[-1][0] == "run.failed"
    assert ws_events[-1][1]["error"]["code"] == "shutting_down"
    assert ws_close == 1012
    assert await asyncio.to_thread(a.wait_exit) == 0

    # Every run is recorded, and its concurrency lease is free: the other replica admits three
    # runs at once (a leaked lease would hold its slot until its TTL, 120 s).
    records = usage_records(b.url, tenant["id"])
    assert sorted(r["status"] for r in records) == ["failed"] * 3
    again = await asyncio.gather(*(plain_run(b.url, key, "Hi [[latency:300]]") for _ in range(3)))
    warnings = [line for line in a.log().splitlines() if '"warning"' in line]
    assert [r.status_code for r in again] == [200, 200, 200], ([r.text for r in again], warnings)
    wait_for(lambda: len(usage_records(b.url, tenant["id"])) == 6, "the new runs' records")
