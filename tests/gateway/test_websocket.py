"""`GET /v1/agents/{name}/ws` against a real uvicorn server, the mock LLM and a real client."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
import orjson
import pytest
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from gateway.mock_llm import MockConfig
from gateway.mock_llm.testing import start_mock_server
from tests.conftest import make_settings
from tests.gateway.conftest import ADMIN, AGENT_SPEC, live_usage, read_ledger
from tests.gateway.server import start_gateway_server
from tests.identity.conftest import bearer, claims, sign

MAX_FRAME = 4096
Event = tuple[str, Any]


@pytest.fixture
def live(request: pytest.FixtureRequest, sqlite_url: str, mock_llm_base_url: str) -> Iterator[str]:
    """A gateway server; limits in memory, or in the real Redis when parametrized "redis"."""
    limits = getattr(request, "param", "memory")
    redis: dict[str, str] = request.getfixturevalue("redis_settings") if limits == "redis" else {}
    settings = make_settings(
        sqlite_url,
        openai_base_url=mock_llm_base_url,
        upstream_api="chat_completions",
        upstream_max_retries=0,
        max_body_bytes=MAX_FRAME,
        **redis,
    )
    base_url, stop = start_gateway_server(settings)
    yield base_url
    stop()


async def seed(base_url: str, slug: str, **tenant: Any) -> tuple[str, dict[str, str]]:
    """A tenant with the `assistant` agent; (tenant id, its key's headers)."""
    async with httpx.AsyncClient(base_url=base_url, headers=ADMIN, timeout=10) as c:
        r = await c.post("/admin/tenants", json={"slug": slug, "name": slug, **tenant})
        assert r.status_code == 201, r.text
        tenant_id = r.json()["id"]
        key = (await c.post(f"/admin/tenants/{tenant_id}/keys", json={"name": "k"})).json()
        r = await c.put(f"/admin/tenants/{tenant_id}/agents/assistant", json=AGENT_SPEC)
        assert r.status_code == 201, r.text
    return tenant_id, bearer(key["key"])


@asynccontextmanager
async def socket(
    base_url: str, headers: dict[str, str], agent: str = "assistant"
) -> AsyncIterator[ClientConnection]:
    url = base_url.replace("http://", "ws://") + f"/v1/agents/{agent}/ws"
    async with connect(url, additional_headers=headers, open_timeout=10) as ws:
        yield ws


async def next_event(ws: ClientConnection) -> Event:
    frame = orjson.loads(await ws.recv())
    assert set(frame) == {"event", "data"}, frame
    return frame["event"], frame["data"]


async def until_end(ws: ClientConnection) -> list[Event]:
    """Events up to and including the turn's terminal event."""
    events = []
    while True:
        events.append(await next_event(ws))
        if events[-1][0] in ("run.completed", "run.failed"):
            return events


async def turn(ws: ClientConnection, body: dict[str, Any]) -> list[Event]:
    await ws.send(orjson.dumps(body).decode())
    return await until_end(ws)


async def test_two_turns_over_one_socket_share_history_and_match_runs(
    live: str, mock_llm_base_url: str
) -> None:
    tenant_id, headers = await seed(live, "ws-chat")
    first = "My name is Ada and I collect antique clocks from every corner of Europe"
    second = "What is my name?"
    async with httpx.AsyncClient(base_url=live, headers=headers, timeout=10) as c:
        plain = [
            (await c.post("/v1/agents/assistant/runs", json={"input": t})).json()
            for t in (first, second)
        ]

    async with socket(live, headers) as ws:
        one = await turn(ws, {"input": first})
        ledger_before = len(read_ledger(mock_llm_base_url, second))
        two = await turn(ws, {"input": second})
        calls = read_ledger(mock_llm_base_url, second)[ledger_before:]

    names = [n for n, _ in one]
    assert names[0] == "run.created" and names[-1] == "run.completed"
    assert "output_text.delta" in names
    assert one[0][1]["status"] == "in_progress"
    completed = one[-1][1]
    assert completed["status"] == "completed"
    assert completed["output"] == plain[0]["output"]
    assert completed["usage"] == plain[0]["usage"]
    assert "".join(d["delta"] for n, d in one if n == "output_text.delta") == completed["output"]
    # Turn 2's model call saw turn 1: more input than the same question asked alone.
    assert two[-1][0] == "run.completed"
    assert [c["input_tokens"] for c in calls] == [two[-1][1]["usage"]["input_tokens"]]
    assert two[-1][1]["usage"]["input_tokens"] > plain[1]["usage"]["input_tokens"] + len(first) // 4
    report = live_usage(live, tenant_id, 4)
    assert report["totals"]["runs"] == 4
    expected = sum(r["usage"]["total_tokens"] for r in (*plain, completed, two[-1][1]))
    assert report["totals"]["total_tokens"] == expected


async def test_tool_calls_are_events(live: str) -> None:
    _, headers = await seed(live, "ws-tools")
    async with socket(live, headers) as ws:
        events = await turn(ws, {"input": "What is 6*7? Use the calculator"})
    names = [n for n, _ in events]
    assert names[0] == "run.created" and names[-1] == "run.completed", names
    called = next(d for n, d in events if n == "tool.called")
    output = next(d for n, d in events if n == "tool.output")
    assert called["name"] == "calculator"
    assert output["call_id"] == called["call_id"]
    assert "42" in output["output"]
    assert names.index("tool.called") < names.index("tool.output")


async def test_handshake_auth_and_agent_isolation(live: str) -> None:
    a_id, a = await seed(live, "ws-a")
    _, b = await seed(live, "ws-b")
    async with httpx.AsyncClient(base_url=live, headers=ADMIN, timeout=10) as c:
        r = await c.put(f"/admin/tenants/{a_id}/agents/only-a", json=AGENT_SPEC)
        assert r.status_code == 201, r.text
        r = await c.post(f"/admin/tenants/{a_id}/keys", json={"name": "u", "scopes": ["usage"]})
        usage_only = bearer(r.json()["key"])
        r = await c.put(f"/admin/tenants/{a_id}/jwt", json={"mode": "hs256", "issuer": "ws-a"})
        secret = r.json()["secret"]

    for headers, status in (
        ({}, 401),
        (bearer("gw_not_a_real_key"), 401),
        ({"X-API-Key": "gw_nope"}, 401),
        (usage_only, 403),
    ):
        with pytest.raises(InvalidStatus) as refused:
            async with socket(live, headers):
                pass
        assert refused.value.response.status_code == status
        assert orjson.loads(refused.value.response.body or b"")["error"]["type"] in (
            "authentication_error",
            "permission_error",
        )
        # A refusal of a known tenant's credential shows its request window, as every /v1
        # response does (a 401 names no tenant).
        assert ("x-ratelimit-limit-requests" in refused.value.response.headers) is (status == 403)
        assert refused.value.response.headers["x-request-id"]

    # Another tenant's agent: indistinguishable from a missing one.
    for agent in ("only-a", "no-such-agent"):
        async with socket(live, b, agent) as ws:
            name, data = await next_event(ws)
            assert (name, data["error"]["code"]) == ("error", "agent_not_found")
            with pytest.raises(ConnectionClosed) as closed:
                await ws.recv()
        assert closed.value.rcvd is not None and closed.value.rcvd.code == 1008
    async with socket(live, a, "only-a") as ws:
        # The 101 carries the request window (the handshake counts no request) and an id.
        shown = ws.response.headers if ws.response is not None else {}
        assert int(shown["x-ratelimit-limit-requests"]) > 0, shown
        remaining = int(shown["x-ratelimit-remaining-requests"])
        assert shown["x-ratelimit-reset-requests"].endswith("s") and shown["x-request-id"]
        assert (await turn(ws, {"input": "hi"}))[-1][0] == "run.completed"
    async with socket(live, a, "only-a") as ws:
        assert ws.response is not None
        assert int(ws.response.headers["x-ratelimit-remaining-requests"]) == remaining - 1
    async with socket(live, {"X-API-Key": a["Authorization"][7:]}) as ws:
        assert (await turn(ws, {"input": "hi"}))[-1][0] == "run.completed"

    # An end-user JWT: the turn's usage is the user's.
    jwt = bearer(sign(claims("ws-a", sub="ws-user-7"), secret, "HS256"))
    async with socket(live, jwt) as ws:
        assert (await turn(ws, {"input": "hello"}))[-1][0] == "run.completed"
    report = live_usage(live, a_id, 3, group_by="user")
    assert {row["user"]: row["runs"] for row in report["data"] if row["user"] is not None} == {
        "ws-user-7": 1
    }


async def test_a_plain_get_of_the_socket_route_is_426_not_404(live: str) -> None:
    """The route exists: a GET without the WebSocket handshake is told to upgrade (426 with
    `Upgrade: websocket`), not that there is nothing there."""
    _, a = await seed(live, "ws-get")
    async with httpx.AsyncClient(base_url=live, timeout=10) as c:
        for headers in (a, {}):
            r = await c.get("/v1/agents/assistant/ws", headers=headers)
            assert r.status_code == 426, r.text
            assert r.headers["upgrade"] == "websocket"
            error = r.json()["error"]
            assert (error["type"], error["code"]) == (
                "invalid_request_error",
                "websocket_upgrade_required",
            )
        r = await c.post("/v1/agents/assistant/ws", headers=a)
        assert r.status_code == 405 and r.headers["allow"] == "GET"


@pytest.mark.parametrize("live", ["memory", "redis"], indirect=True)
async def test_request_limit_fails_the_turn_and_keeps_the_socket(
    live: str, mock_llm_base_url: str
) -> None:
    _, headers = await seed(live, "ws-limited", limits={"requests_per_minute": 2})
    async with socket(live, headers) as ws:
        for _ in range(2):
            assert (await turn(ws, {"input": "hi"}))[-1][0] == "run.completed"
        ledger_before = len(read_ledger(mock_llm_base_url, "hi"))
        limited = await turn(ws, {"input": "hi"})
        assert [n for n, _ in limited] == ["run.failed"]
        error = limited[0][1]["error"]
        assert (error["type"], error["code"]) == ("rate_limit_error", "requests_per_minute")
        assert 1 <= error["retry_after"] <= 60
        assert len(read_ledger(mock_llm_base_url, "hi")) == ledger_before, "no model call"
        # Still open and answering.
        await ws.send("{")
        assert (await next_event(ws))[1]["error"]["code"] == "invalid_json"
        assert (await turn(ws, {"input": "again"}))[0][1]["error"]["code"] == "requests_per_minute"


async def test_bad_frames_get_errors_and_the_socket_stays_usable(live: str) -> None:
    _, headers = await seed(live, "ws-frames")
    async with socket(live, headers) as ws:
        bad: list[tuple[str | bytes, str]] = [
            ("not json", "invalid_json"),
            (orjson.dumps({"input": "hi", "stream": True}).decode(), "invalid_value"),
            (orjson.dumps({"input": ""}).decode(), "invalid_value"),
            (orjson.dumps({"input": [{"role": "tool", "content": "x"}]}).decode(), "invalid_value"),
            (b'{"input": "hi"}', "invalid_frame"),
            (orjson.dumps({"input": "x" * MAX_FRAME}).decode(), "frame_too_large"),
        ]
        for frame, code in bad:
            await ws.send(frame)
            name, data = await next_event(ws)
            assert (name, data["error"]["type"], data["error"]["code"]) == (
                "error",
                "invalid_request_error",
                code,
            ), frame
        # JSON that is not an object says what a frame is (not pydantic's class name).
        for frame in ("[]", "null", '"hi"'):
            await ws.send(frame)
            name, data = await next_event(ws)
            assert data["error"]["code"] == "invalid_value", frame
            assert data["error"]["message"] == 'A frame is a JSON object: {"input": …}.'
        assert (await turn(ws, {"input": "hi"}))[-1][0] == "run.completed"

        # One turn at a time: a frame during a turn is refused, the turn goes on.
        await ws.send(orjson.dumps({"input": "slow [[latency:600]]"}).decode())
        assert (await next_event(ws))[0] == "run.created"
        await ws.send(orjson.dumps({"input": "too soon"}).decode())
        events = await until_end(ws)
        refusals = [d for n, d in events if n == "error"]
        assert [r["error"]["code"] for r in refusals] == ["turn_in_progress"]
        assert events[-1][0] == "run.completed"
        # Frames sent right after a terminal event start a turn (the socket is freed before
        # the terminal event is sent; this loop does not force the race, it only shows it).
        for _ in range(3):
            assert (await turn(ws, {"input": "next"}))[-1][0] == "run.completed"


async def test_disconnect_mid_turn_cancels_and_records_spent_tokens(
    live: str, mock_llm_base_url: str
) -> None:
    tenant_id, headers = await seed(live, "ws-gone")
    text = "Use the calculator on 6*7 [[latency:1500]]"
    ledger_before = len(read_ledger(mock_llm_base_url, text))
    started = time.monotonic()
    async with socket(live, headers) as ws:
        await ws.send(orjson.dumps({"input": text}).decode())
        seen = []
        while "tool.output" not in seen:
            seen.append((await next_event(ws))[0])
        # Leave while the second model call waits upstream (sent: the mock has it).
        deadline = time.monotonic() + 5
        while httpx.get(f"{mock_llm_base_url}/_mock/waiting").json()["waiting"] < 1:
            assert time.monotonic() < deadline, "the second call never reached the mock"
            await asyncio.sleep(0.02)
    totals = live_usage(live, tenant_id, 1)["totals"]
    elapsed = time.monotonic() - started
    calls = read_ledger(mock_llm_base_url, text)[ledger_before:]
    # That call is read when it answers (the upstream billed it): the record holds both
    # calls, exactly as the upstream counted them, and the run stops there.
    assert len(calls) == 2
    assert totals["runs"] == 1 and totals["requests"] == 2
    assert totals["input_tokens"] == sum(call["input_tokens"] for call in calls)
    assert totals["output_tokens"] == sum(call["output_tokens"] for call in calls)
    assert elapsed < 1.5 + 1.5 + 1.5
    metrics = httpx.get(f"{live}/metrics").text
    assert (
        'gateway_runs_total{agent="assistant",status="cancelled",tenant="ws-gone"} 1.0' in metrics
    )


async def test_turn_on_a_server_side_conversation(live: str) -> None:
    _, headers = await seed(live, "ws-conv")
    async with httpx.AsyncClient(base_url=live, headers=headers, timeout=10) as c:
        conv = (await c.post("/v1/conversations", json={})).json()["id"]
        async with socket(live, headers) as ws:
            one = await turn(ws, {"input": "Remember the word teapot", "conversation_id": conv})
            two = await turn(ws, {"input": "Which word?", "conversation_id": conv})
            missing = await turn(ws, {"input": "hi", "conversation_id": "conv_missing"})
        items = (await c.get(f"/v1/conversations/{conv}/items")).json()["data"]
    for events in (one, two):
        assert events[-1][0] == "run.completed"
        assert events[-1][1]["conversation_id"] == conv
    assert [i["role"] for i in items] == ["user", "assistant", "user", "assistant"]
    assert items[0]["content"] == "Remember the word teapot"
    assert items[2]["content"] == "Which word?"
    # Turn 2 ran on the stored history (more input than turn 1's).
    assert two[-1][1]["usage"]["input_tokens"] > one[-1][1]["usage"]["input_tokens"]
    assert missing[-1][1]["error"]["code"] == "conversation_not_found"


async def test_composition_over_a_socket(live: str) -> None:
    """A guardrail fails the turn (the socket stays usable), a handoff is an event."""
    tenant_id, headers = await seed(live, "ws-compose")
    guarded = {
        **AGENT_SPEC,
        "handoffs": ["assistant"],
        "guardrails": {"input": {"blocked_patterns": ["(?i)password"]}},
    }
    async with httpx.AsyncClient(base_url=live, headers=ADMIN, timeout=10) as c:
        r = await c.put(f"/admin/tenants/{tenant_id}/agents/desk", json=guarded)
        assert r.status_code == 201, r.text
    async with socket(live, headers, agent="desk") as ws:
        blocked = await turn(ws, {"input": "my Password is hunter2"})
        handed = await turn(ws, {"input": "please transfer_to_assistant"})
    assert [n for n, _ in blocked] == ["run.created", "run.failed"]
    error = blocked[-1][1]["error"]
    assert (error["code"], error["param"]) == ("guardrail_triggered", "input.blocked_patterns[0]")
    assert handed[-1][0] == "run.completed"
    assert ("agent.handoff", {"from": "desk", "to": "assistant"}) in handed


@pytest.fixture
def slow_stream_live(sqlite_url: str) -> Iterator[tuple[str, str]]:
    """A gateway on a mock that streams a segment every 150 ms."""
    mock_url, stop_mock = start_mock_server(MockConfig(stream_delay_ms=150))
    settings = make_settings(sqlite_url, openai_base_url=mock_url, upstream_max_retries=0)
    base_url, stop = start_gateway_server(settings)
    yield base_url, mock_url
    stop()
    stop_mock()


async def test_leaving_while_the_upstream_answers_records_that_calls_tokens(
    slow_stream_live: tuple[str, str],
) -> None:
    """As for SSE: the call being answered when the client left is read to its end and its
    tokens recorded; the run is cancelled."""
    live_url, mock_url = slow_stream_live
    tenant_id, headers = await seed(live_url, "ws-mid-answer")
    async with socket(live_url, headers) as ws:
        await ws.send(orjson.dumps({"input": "tell me about the sea"}).decode())
        while (await next_event(ws))[0] != "output_text.delta":
            pass  # leave at the first word of the answer
    totals = live_usage(live_url, tenant_id, 1)["totals"]
    (call,) = httpx.get(f"{mock_url}/_mock/ledger").json()
    assert totals["runs"] == 1 and totals["requests"] == 1
    assert totals["input_tokens"] == call["input_tokens"]
    assert totals["output_tokens"] == call["output_tokens"]
    metrics = httpx.get(f"{live_url}/metrics").text
    assert (
        'gateway_runs_total{agent="assistant",status="cancelled",tenant="ws-mid-answer"} 1.0'
        in metrics
    )


async def test_a_browser_authenticates_with_a_bearer_subprotocol(live: str) -> None:
    """A browser's `WebSocket` cannot set headers: `new WebSocket(url, ["agent-gateway",
    "bearer." + token])`. The handshake answers `agent-gateway`, never the token."""
    tenant_id, headers = await seed(live, "ws-browser")
    key = headers["Authorization"][len("Bearer ") :]
    url = live.replace("http://", "ws://") + "/v1/agents/assistant/ws"
    offered: Any = ["agent-gateway", f"bearer.{key}"]
    async with connect(url, subprotocols=offered, open_timeout=10) as ws:
        assert ws.subprotocol == "agent-gateway"
        assert key not in str(ws.response.headers)
        assert (await turn(ws, {"input": "hi"}))[-1][0] == "run.completed"
    async with httpx.AsyncClient(base_url=live, headers=ADMIN, timeout=10) as c:
        r = await c.put(f"/admin/tenants/{tenant_id}/jwt", json={"mode": "hs256", "issuer": "wsb"})
        secret = r.json()["secret"]
    jwt = sign(claims("wsb", sub="browser-user"), secret, "HS256")
    async with connect(url, subprotocols=[f"bearer.{jwt}"], open_timeout=10) as ws:  # type: ignore[list-item]
        assert ws.subprotocol is None  # only the credential offered: nothing to answer
        assert (await turn(ws, {"input": "hi"}))[-1][0] == "run.completed"
    report = live_usage(live, tenant_id, 2, group_by="user")
    assert {row["user"] for row in report["data"]} == {None, "browser-user"}

    _, other = await seed(live, "ws-browser-2")
    other_key = other["Authorization"][len("Bearer ") :]
    for protocols, extra in (
        (["agent-gateway", "bearer.gw_not_a_real_key"], {}),
        (["agent-gateway", f"bearer.{key}", f"bearer.{other_key}"], {}),  # two credentials
        (["agent-gateway", f"bearer.{key}"], other),  # a header that differs
        (["agent-gateway", "bearer."], {}),
    ):
        with pytest.raises(InvalidStatus) as refused:
            async with connect(
                url, subprotocols=protocols, additional_headers=extra, open_timeout=10
            ):
                pass
        assert refused.value.response.status_code == 401
    # The same credential twice (header and subprotocol) is one credential.
    async with connect(
        url, subprotocols=offered, additional_headers=headers, open_timeout=10
    ) as ws:
        assert (await turn(ws, {"input": "hi"}))[-1][0] == "run.completed"
