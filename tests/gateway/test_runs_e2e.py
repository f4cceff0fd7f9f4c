"""End to end: the gateway runs agents against the mock LLM over real HTTP, both upstream
APIs, plain and streamed, with a tool call; usage equals what the mock reported.
"""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from tests.gateway.conftest import Gateway, Tenant


def parse_sse(text: str) -> list[tuple[str, Any]]:
    """(event, data) pairs of an SSE body; comments are kept as ('#', text)."""
    events: list[tuple[str, Any]] = []
    for block in text.split("\n\n"):
        if not block.strip():
            continue
        if block.startswith(":"):
            events.append(("#", block))
            continue
        name, data = "", ""
        for line in block.split("\n"):
            if line.startswith("event: "):
                name = line[7:]
            elif line.startswith("data: "):
                data = line[6:]
        events.append((name, orjson.loads(data)))
    return events


async def test_plain_run_with_tool_call_reports_exact_usage(
    gateway: Gateway, tenant: Tenant
) -> None:
    text = "What is 12*7? Use the calculator."
    before = len(gateway.mock_ledger(text))
    r = await gateway.client.post(
        "/v1/agents/assistant/runs",
        json={"input": text},
        headers=tenant.headers,
    )
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["object"] == "agent.run"
    assert body["status"] == "completed"
    assert body["agent"] == "assistant"
    assert body["model"] == "mock-model"
    assert body["id"].startswith("run_")
    assert "84" in body["output"]
    calls = gateway.mock_ledger(text)[before:]
    assert len(calls) == 2
    usage = body["usage"]
    assert usage["requests"] == 2
    assert usage["input_tokens"] == sum(c["input_tokens"] for c in calls)
    assert usage["output_tokens"] == sum(c["output_tokens"] for c in calls)
    assert usage["total_tokens"] == usage["input_tokens"] + usage["output_tokens"]


async def test_streamed_run_events_and_usage(gateway: Gateway, tenant: Tenant) -> None:
    text = "Compute 2+3 with the calculator please"
    before = len(gateway.mock_ledger(text))
    r = await gateway.client.post(
        "/v1/agents/assistant/runs",
        json={"input": text, "stream": True},
        headers=tenant.headers,
    )
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("text/event-stream")
    events = parse_sse(r.text)
    names = [name for name, _ in events]
    assert names[0] == "run.created"
    assert "tool.called" in names and "tool.output" in names
    assert names.index("tool.called") < names.index("tool.output")
    assert "output_text.delta" in names
    terminal = [n for n in names if n in ("run.completed", "run.failed")]
    assert terminal == ["run.completed"] and names[-1] == "run.completed"
    tool_called = dict(events)["tool.called"]
    assert tool_called["name"] == "calculator"
    assert dict(events)["tool.output"]["output"] == "5"
    final = events[-1][1]
    deltas = "".join(d["delta"] for n, d in events if n == "output_text.delta")
    assert final["output"] == deltas
    assert "5" in final["output"]
    calls = gateway.mock_ledger(text)[before:]
    assert final["usage"]["requests"] == len(calls) == 2
    assert final["usage"]["input_tokens"] == sum(c["input_tokens"] for c in calls)
    assert final["usage"]["output_tokens"] == sum(c["output_tokens"] for c in calls)


@pytest.mark.parametrize(
    ("accept", "streams"),
    [
        ("text/event-stream", True),
        ("TEXT/Event-Stream", True),  # media types are case-insensitive
        ("application/json, text/event-stream", True),  # ready for either
        ("text/event-stream;q=0", False),  # refused (RFC 9110 §12.4.2)
        ("application/json;q=1.0, text/event-stream;q=0.1", False),  # JSON preferred
        ("*/*", False),
        ("application/json", False),
        # JSON weighed through a wildcard still counts (RFC 9110 §12.5.1).
        ("*/*;q=0.9, text/event-stream;q=0.1", False),
        ("application/*, text/event-stream;q=0.5", False),
        ("text/event-stream, */*", True),
        # Several header lines are one list (RFC 9110 §5.3).
        (["application/json", "text/event-stream"], True),
        (["text/html", "text/event-stream"], True),
        (["application/json", "text/event-stream;q=0.2"], False),
    ],
)
async def test_the_accept_header_selects_streaming_by_its_weights(
    gateway: Gateway, tenant: Tenant, accept: str | list[str], streams: bool
) -> None:
    lines = [accept] if isinstance(accept, str) else accept
    r = await gateway.client.post(
        "/v1/agents/assistant/runs",
        json={"input": "hello there"},
        headers=[*tenant.headers.items(), *(("Accept", line) for line in lines)],
    )
    assert r.status_code == 200, r.text
    if streams:
        assert r.headers["content-type"].startswith("text/event-stream")
        names = [n for n, _ in parse_sse(r.text)]
        assert names[0] == "run.created" and names[-1] == "run.completed"
    else:
        assert r.headers["content-type"].startswith("application/json")
        assert r.json()["status"] == "completed"


async def test_usage_record_matches_run_and_usage_api(gateway: Gateway, tenant: Tenant) -> None:
    runs = []
    for text in ("one", "two words", "What is 3*3 with calculator?"):
        r = await gateway.client.post(
            "/v1/agents/assistant/runs", json={"input": text}, headers=tenant.headers
        )
        assert r.status_code == 200
        runs.append(r.json())
    await gateway.flush_usage()
    r = await gateway.client.get("/v1/usage?group_by=agent", headers=tenant.headers)
    assert r.status_code == 200, r.text
    report = r.json()
    totals = report["totals"]
    assert totals["runs"] == 3
    assert totals["requests"] == sum(run["usage"]["requests"] for run in runs)
    assert totals["input_tokens"] == sum(run["usage"]["input_tokens"] for run in runs)
    assert totals["output_tokens"] == sum(run["usage"]["output_tokens"] for run in runs)
    assert report["data"] == [{"agent": "assistant", **totals}]


@pytest.mark.parametrize(
    ("marker", "status", "error_type"),
    [
        ("[[fault:500]]", 502, "upstream_error"),
        ("[[fault:bad]]", 502, "upstream_error"),
    ],
)
async def test_upstream_failures_map_to_gateway_errors(
    gateway: Gateway, tenant: Tenant, marker: str, status: int, error_type: str
) -> None:
    r = await gateway.client.post(
        "/v1/agents/assistant/runs", json={"input": f"hi {marker}"}, headers=tenant.headers
    )
    assert r.status_code == status, r.text
    error = r.json()["error"]
    assert error["type"] == error_type
    assert "Traceback" not in r.text
    await gateway.flush_usage()
    r = await gateway.client.get("/v1/usage", headers=tenant.headers)
    assert r.json()["totals"]["runs"] == 1
