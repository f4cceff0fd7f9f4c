"""A run is settled exactly once however its stream ends: the client leaves after each event
index (the first, `run.created`, included) on every streaming surface (SSE runs, Chat
Completions stream, WebSocket). Afterwards the in-flight gauge is back to 0, the concurrency
lease (in Redis) is released and every run has exactly one usage record."""

from __future__ import annotations

import json
import shutil
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest
import websockets.sync.client

from gateway.mock_llm import MockConfig
from gateway.mock_llm.testing import start_mock_server
from tests.conftest import ADMIN_TOKEN
from tests.faults.rawhttp import request_head
from tests.observability.live import LiveGateway, LiveTenant, parse_metrics, serve_gateway, total
from tests.waiting import wait_until

pytestmark = pytest.mark.faults

ADMIN = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
TEXT = "hello there my friend"  # the mock answers "Mock answer to: ..." one word per delta
EVENTS = 1 + 7 + 1  # run.created, 7 deltas, run.completed


@pytest.fixture
def slow_mock() -> Iterator[str]:
    """Streams a word every 50 ms: a client leaving after event k leaves mid-run."""
    base_url, stop = start_mock_server(MockConfig(stream_delay_ms=50))
    yield base_url
    stop()


def sse_leave_after(live: LiveGateway, tenant: LiveTenant, k: int) -> str:
    body = {"input": TEXT, "stream": True}
    run_id = ""
    seen = 0
    with (
        live.client() as c,
        c.stream("POST", "/v1/agents/assistant/runs", json=body, headers=tenant.headers) as r,
    ):
        assert r.status_code == 200
        for line in r.iter_lines():
            if line.startswith("data: ") and not run_id:
                run_id = json.loads(line[6:])["id"]
            if line.startswith("data: "):
                seen += 1
                if seen > k:
                    break
    return run_id


def chat_leave_after(live: LiveGateway, tenant: LiveTenant, k: int) -> str:
    body = {"model": "assistant", "messages": [{"role": "user", "content": TEXT}], "stream": True}
    run_id = ""
    seen = 0
    with (
        live.client() as c,
        c.stream("POST", "/v1/chat/completions", json=body, headers=tenant.headers) as r,
    ):
        assert r.status_code == 200
        for line in r.iter_lines():
            if line.startswith("data: {") and not run_id:
                run_id = json.loads(line[6:])["id"].removeprefix("chatcmpl-")
            if line.startswith("data: "):
                seen += 1
                if seen > k:
                    break
    return run_id


def ws_leave_after(live: LiveGateway, tenant: LiveTenant, k: int) -> str:
    url = live.base_url.replace("http://", "ws://") + "/v1/agents/assistant/ws"
    run_id = ""
    with websockets.sync.client.connect(url, additional_headers=tenant.headers) as ws:
        ws.send(json.dumps({"input": TEXT}))
        for seen in range(k + 1):
            frame = json.loads(ws.recv(timeout=20))
            if seen == 0:
                assert frame["event"] == "run.created", frame
                run_id = frame["data"]["id"]
    return run_id


def http_leave_at_once(
    live: LiveGateway, tenant: LiveTenant, path: str, body: dict[str, Any]
) -> None:
    """Send the request and close the connection before any answer."""
    payload = json.dumps(body).encode()
    head = request_head(
        "POST",
        path,
        {**tenant.headers, "Content-Type": "application/json", "Content-Length": str(len(payload))},
    )
    url = urlsplit(live.base_url)
    with socket.create_connection((url.hostname, url.port), timeout=10) as sock:
        sock.sendall(head + payload)


def leave_before_the_first_event(live: LiveGateway, tenant: LiveTenant, surface: str) -> None:
    if surface == "sse":
        http_leave_at_once(
            live, tenant, "/v1/agents/assistant/runs", {"input": TEXT, "stream": True}
        )
    elif surface == "chat":
        messages = [{"role": "user", "content": TEXT}]
        body = {"model": "assistant", "messages": messages, "stream": True}
        http_leave_at_once(live, tenant, "/v1/chat/completions", body)
    else:
        url = live.base_url.replace("http://", "ws://") + "/v1/agents/assistant/ws"
        with websockets.sync.client.connect(url, additional_headers=tenant.headers) as ws:
            ws.send(json.dumps({"input": TEXT}))


SURFACES = {"sse": sse_leave_after, "chat": chat_leave_after, "ws": ws_leave_after}


def in_flight(live: LiveGateway) -> float:
    metrics = parse_metrics(httpx.get(live.base_url + "/metrics", timeout=10).text)
    return total(metrics, "gateway_runs_in_flight")


def leases_in_use(live: LiveGateway, tenant: LiveTenant) -> int:
    r = httpx.get(live.base_url + "/v1/limits", headers=tenant.headers, timeout=10)
    assert r.status_code == 200, r.text
    return int(r.json()["windows"]["max_concurrent_runs"]["used"])


def usage_records(live: LiveGateway, tenant: LiveTenant) -> list[dict[str, Any]]:
    r = httpx.get(
        live.base_url + "/admin/usage/records",
        params={"tenant_id": tenant.id},
        headers={**ADMIN, "Accept": "application/x-ndjson"},
        timeout=30,
    )
    assert r.status_code == 200, r.text
    return [json.loads(line) for line in r.text.splitlines() if line.strip()]


def test_every_streamed_run_settles_once_whenever_the_client_leaves(
    tmp_path: Path,
    sqlite_template: Path,
    slow_mock: str,
    redis_url: str,
    redis_prefix: str,
) -> None:
    db = tmp_path / "gateway.db"
    shutil.copy(sqlite_template, db)
    env = {"GATEWAY_REDIS_URL": redis_url, "GATEWAY_REDIS_KEY_PREFIX": redis_prefix}
    with serve_gateway(tmp_path, f"sqlite+aiosqlite:///{db}", slow_mock, workers=1, **env) as live:
        tenant = live.create_tenant("leaver", limits={"max_concurrent_runs": 100})
        run_ids: list[str] = []
        for surface, leave_after in SURFACES.items():
            leave_before_the_first_event(live, tenant, surface)
            for k in range(EVENTS):
                run_id = leave_after(live, tenant, k)
                assert run_id.startswith("run_"), (surface, k, run_id)
                run_ids.append(run_id)

        assert wait_until(lambda: in_flight(live) == 0, timeout=20), in_flight(live)
        assert wait_until(lambda: leases_in_use(live, tenant) == 0, timeout=20), (
            leases_in_use(live, tenant),
            [r["status"] for r in usage_records(live, tenant)],
        )
        # A run left before its first event may not have started (the socket read the close
        # first); every run that started is settled (in flight 0, no lease) and recorded once.
        assert wait_until(lambda: len(usage_records(live, tenant)) >= len(run_ids), timeout=20)
        records = usage_records(live, tenant)
        recorded = [r["run_id"] for r in records]
        assert len(recorded) == len(set(recorded)), "one record per run"
        assert set(run_ids) <= set(recorded)
        assert len(records) <= len(run_ids) + len(SURFACES)
        status = {r["run_id"]: r["status"] for r in records}
        # Leaving mid-run cancels it; reading to the end completes it.
        assert [status[run_id] for run_id in run_ids[:3]] == ["cancelled"] * 3
        assert [status[run_ids[i * EVENTS + EVENTS - 1]] for i in range(3)] == ["completed"] * 3
