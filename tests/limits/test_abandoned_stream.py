"""A streamed run whose client is gone before the first byte: its slot and reservation come
back at once (not after the lease TTL), and the run is recorded as cancelled."""

from __future__ import annotations

from typing import Any

import httpx
import orjson
import pytest
from prometheus_client import REGISTRY

from tests.gateway.conftest import Gateway, gateway_for
from tests.limits.conftest import limited_tenant
from tests.waiting import eventually


@pytest.fixture
async def gw(sqlite_url: str, mock_llm_base_url: str, redis_settings: dict[str, str]) -> Any:
    async for gateway in gateway_for(sqlite_url, mock_llm_base_url, **redis_settings):
        yield gateway


async def _abandoned_stream(gw: Gateway, path: str, body: dict[str, Any], key: str) -> int:
    """Send a streaming request whose client is already gone when the response starts."""
    payload = orjson.dumps(body)
    messages = [
        {"type": "http.request", "body": payload, "more_body": False},
        {"type": "http.disconnect"},
    ]
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return messages.pop(0) if messages else {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "root_path": "",
        "headers": [
            (b"host", b"gateway.test"),
            (b"content-type", b"application/json"),
            (b"content-length", str(len(payload)).encode()),
            (b"authorization", f"Bearer {key}".encode()),
        ],
        "client": ("127.0.0.1", 50000),
        "server": ("gateway.test", 80),
        "state": {},
    }
    await gw.app(scope, receive, send)
    starts = [m for m in sent if m["type"] == "http.response.start"]
    return int(starts[0]["status"]) if starts else 0


@pytest.mark.parametrize(
    ("path", "body"),
    [
        # a slow model call ([[latency]]): it cannot answer before the client is found gone
        ("/v1/agents/assistant/runs", {"input": "hello [[latency:500]]", "stream": True}),
        (
            "/v1/chat/completions",
            {
                "model": "assistant",
                "messages": [{"role": "user", "content": "hi [[latency:500]]"}],
                "stream": True,
            },
        ),
    ],
)
async def test_a_stream_abandoned_before_its_first_byte_frees_its_slot(
    gw: Gateway, path: str, body: dict[str, Any]
) -> None:
    tenant = await limited_tenant(gw, "acme", max_concurrent_runs=1, tokens_per_day=100_000)
    key = tenant.headers["Authorization"].removeprefix("Bearer ")
    in_flight = REGISTRY.get_sample_value("gateway_runs_in_flight", {"tenant": "acme"}) or 0.0
    for _ in range(3):
        assert await _abandoned_stream(gw, path, body, key) == 200

        async def released() -> bool:  # the release runs in the background
            windows = (await gw.client.get("/v1/limits", headers=tenant.headers)).json()["windows"]
            return bool(
                windows["max_concurrent_runs"]["used"] == 0
                and windows["tokens_per_day"]["used"] == 0
            )

        await eventually(released, what="the abandoned run's slot and tokens released")
    r = await gw.client.post(
        "/v1/agents/assistant/runs", json={"input": "hello"}, headers=tenant.headers
    )
    assert r.status_code == 200, r.text
    after = REGISTRY.get_sample_value("gateway_runs_in_flight", {"tenant": "acme"}) or 0.0
    assert after == in_flight
    await gw.flush_usage()
    usage = (await gw.client.get("/v1/usage?group_by=day", headers=tenant.headers)).json()
    assert usage["totals"]["runs"] == 4  # the 3 abandoned runs are recorded (cancelled), too
    assert usage["totals"]["total_tokens"] == r.json()["usage"]["total_tokens"]


async def test_an_abandoned_conversation_stream_frees_the_conversation(gw: Gateway) -> None:
    tenant = await limited_tenant(gw, "acme", max_concurrent_runs=1)
    key = tenant.headers["Authorization"].removeprefix("Bearer ")
    r = await gw.client.post("/v1/conversations", json={}, headers=tenant.headers)
    assert r.status_code == 201, r.text
    conversation = r.json()["id"]
    body = {"input": "hello [[latency:500]]", "stream": True, "conversation_id": conversation}
    assert await _abandoned_stream(gw, "/v1/agents/assistant/runs", body, key) == 200

    async def next_turn() -> httpx.Response | None:  # the lock's release runs in the background
        r = await gw.client.post(
            "/v1/agents/assistant/runs",
            json={"input": "hello", "conversation_id": conversation},
            headers=tenant.headers,
        )
        busy = r.status_code == 409 and r.json()["error"]["code"] == "conversation_busy"
        return None if busy else r

    r = await eventually(next_turn, what="the abandoned turn's conversation lock released")
    assert r.status_code == 200, r.text  # neither conversation_busy nor concurrent_runs
    items = await gw.client.get(f"/v1/conversations/{conversation}/items", headers=tenant.headers)
    assert len(items.json()["data"]) == 2  # only the completed turn: user + assistant
