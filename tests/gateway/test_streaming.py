"""Streaming behaviour a client notices: keep-alives, failures as events, disconnects."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from gateway.mock_llm import MockConfig
from gateway.mock_llm.testing import start_mock_server
from tests.conftest import ADMIN_TOKEN, make_settings
from tests.gateway.conftest import AGENT_SPEC, gateway_for, live_usage
from tests.gateway.server import start_gateway_server
from tests.gateway.test_runs_e2e import parse_sse
from tests.waiting import wait_until

ADMIN = {"Authorization": f"Bearer {ADMIN_TOKEN}"}


async def test_keepalive_comments_while_the_model_is_slow(
    sqlite_url: str, mock_llm_base_url: str
) -> None:
    async for gw in gateway_for(sqlite_url, mock_llm_base_url, stream_keepalive_s=0.05):
        tenant = await gw.create_tenant("slow")
        r = await gw.client.post(
            "/v1/agents/assistant/runs",
            json={"input": "hello [[latency:400]]", "stream": True},
            headers=tenant.headers,
        )
        events = parse_sse(r.text)
        names = [n for n, _ in events]
        assert names.count("#") >= 3
        assert names[0] == "run.created"
        assert names[-1] == "run.completed"


def test_the_keepalive_setting_keeps_a_comment_within_15_s() -> None:
    """A comment comes after `stream_keepalive_s` of silence, plus the time to write it: the
    default and the bound leave room under the 15 s every stream promises (15.0 gave gaps of
    15.1 s)."""
    from pydantic import ValidationError

    from gateway.core.config import Settings

    assert Settings.model_fields["stream_keepalive_s"].default == 10.0
    with pytest.raises(ValidationError):
        make_settings("sqlite://", stream_keepalive_s=15)
    assert make_settings("sqlite://", stream_keepalive_s=14).stream_keepalive_s == 14


async def test_upstream_failure_is_a_run_failed_event(
    sqlite_url: str, mock_llm_base_url: str
) -> None:
    async for gw in gateway_for(sqlite_url, mock_llm_base_url, upstream_max_retries=0):
        tenant = await gw.create_tenant("failing")
        r = await gw.client.post(
            "/v1/agents/assistant/runs",
            json={"input": "hi [[fault:503]]", "stream": True},
            headers=tenant.headers,
        )
        assert r.status_code == 200
        events = parse_sse(r.text)
        names = [n for n, _ in events]
        assert names == ["run.created", "run.failed"]
        assert events[-1][1]["error"]["type"] == "upstream_error"
        assert events[-1][1]["error"]["code"] == "upstream_503"


@pytest.fixture
def live_gateway(sqlite_url: str, mock_llm_base_url: str) -> Iterator[str]:
    settings = make_settings(sqlite_url, openai_base_url=mock_llm_base_url)
    base_url, stop = start_gateway_server(settings)
    yield base_url
    stop()


def _seed(base_url: str) -> tuple[str, dict[str, str]]:
    with httpx.Client(base_url=base_url, headers=ADMIN, timeout=10) as c:
        tenant_id = c.post("/admin/tenants", json={"slug": "live", "name": "live"}).json()["id"]
        key = c.post(f"/admin/tenants/{tenant_id}/keys", json={"name": "k"}).json()["key"]
        c.put(f"/admin/tenants/{tenant_id}/agents/assistant", json=AGENT_SPEC).raise_for_status()
    return tenant_id, {"Authorization": f"Bearer {key}"}


def test_client_disconnect_cancels_the_run_and_keeps_spent_tokens(
    live_gateway: str, mock_llm_base_url: str
) -> None:
    tenant_id, headers = _seed(live_gateway)
    ledger_before = len(httpx.get(f"{mock_llm_base_url}/_mock/ledger").json())
    body = {"input": "Use the calculator on 6*7 [[latency:1500]]", "stream": True}
    seen: list[str] = []
    started = time.monotonic()
    with (
        httpx.Client(base_url=live_gateway, timeout=10) as c,
        c.stream("POST", "/v1/agents/assistant/runs", json=body, headers=headers) as r,
    ):
        for line in r.iter_lines():
            if line.startswith("event: "):
                seen.append(line[7:])
            if "tool.output" in seen:
                # leave while the second model call is waiting upstream (sent: the mock has it)
                deadline = time.monotonic() + 5
                while httpx.get(f"{mock_llm_base_url}/_mock/waiting").json()["waiting"] < 1:
                    assert time.monotonic() < deadline, "the second call never reached the mock"
                    time.sleep(0.02)
                break
    assert seen[0] == "run.created" and "tool.called" in seen
    totals = live_usage(live_gateway, tenant_id, 1)["totals"]
    elapsed = time.monotonic() - started
    calls = httpx.get(f"{mock_llm_base_url}/_mock/ledger").json()[ledger_before:]
    # The second call, sent before the client left, is read when it answers (the upstream had
    # it and billed it): the record holds both calls, exactly as the upstream counted them.
    assert len(calls) == 2
    assert totals["runs"] == 1
    assert totals["requests"] == 2
    assert totals["input_tokens"] == sum(call["input_tokens"] for call in calls)
    assert totals["output_tokens"] == sum(call["output_tokens"] for call in calls)
    # And the run stopped there: no third call after the answer, recorded at once after it.
    assert elapsed < 1.5 + 1.5 + 1.5
    metrics = httpx.get(f"{live_gateway}/metrics").text
    assert 'gateway_runs_total{agent="assistant",status="cancelled",tenant="live"}' in metrics


def _cancelled_calls(base_url: str) -> tuple[float, float]:
    """`gateway_upstream_requests_total` and the latency histogram's count, status `cancelled`."""
    values = {"total": 0.0, "count": 0.0}
    for line in httpx.get(f"{base_url}/metrics").text.splitlines():
        if 'status="cancelled"' not in line or 'model="mock-model"' not in line:
            continue
        if line.startswith("gateway_upstream_requests_total{"):
            values["total"] += float(line.rsplit(" ", 1)[1])
        elif line.startswith("gateway_upstream_request_duration_seconds_count{"):
            values["count"] += float(line.rsplit(" ", 1)[1])
    return values["total"], values["count"]


def test_a_call_cut_unanswered_is_counted_and_timed_as_cancelled(sqlite_url: str) -> None:
    """The client leaves while the model call waits upstream, and the upstream does not answer
    within GATEWAY_STREAM_DISCONNECT_GRACE_S: the call is cut, and counted in
    `gateway_upstream_requests_total` and timed in the latency histogram alike, as
    `cancelled` (not an upstream error). The counter used to miss it, while the histogram had
    it as `error`."""
    mock_url, stop_mock = start_mock_server(MockConfig())
    settings = make_settings(sqlite_url, openai_base_url=mock_url, stream_disconnect_grace_s=0.3)
    base_url, stop = start_gateway_server(settings)
    try:
        tenant_id, headers = _seed(base_url)
        before = _cancelled_calls(base_url)
        body = {"input": "wait for me [[latency:3000]]", "stream": True}
        with (
            httpx.Client(base_url=base_url, timeout=10) as c,
            c.stream("POST", "/v1/agents/assistant/runs", json=body, headers=headers) as r,
        ):
            # Held, not dropped: a dropped line iterator is closed at once and closes the
            # connection with it, so the client would leave before the call was sent.
            lines = r.iter_lines()
            assert next(lines) == "event: run.created"
            deadline = time.monotonic() + 5
            while httpx.get(f"{mock_url}/_mock/waiting").json()["waiting"] < 1:
                assert time.monotonic() < deadline, "the call never reached the upstream"
                time.sleep(0.02)
        (record,) = _records(base_url, tenant_id, 1)
        assert record["status"] == "cancelled" and record["requests"] == 0
        counted, timed = _cancelled_calls(base_url)
        assert (counted - before[0], timed - before[1]) == (1, 1)
    finally:
        stop()
        stop_mock()


@pytest.fixture
def slow_stream_gateway(sqlite_url: str) -> Iterator[tuple[str, str]]:
    """A gateway on a mock that streams a segment every 150 ms: a client can leave while the
    upstream is answering."""
    mock_url, stop_mock = start_mock_server(MockConfig(stream_delay_ms=150))
    settings = make_settings(sqlite_url, openai_base_url=mock_url)
    base_url, stop = start_gateway_server(settings)
    yield base_url, mock_url
    stop()
    stop_mock()


def _records(base_url: str, tenant_id: str, runs: int) -> list[dict[str, Any]]:
    deadline = time.monotonic() + 10
    while True:
        r = httpx.get(
            f"{base_url}/admin/usage/records",
            params={"tenant_id": tenant_id},
            headers={**ADMIN, "Accept": "application/x-ndjson"},
        )
        records = [json.loads(line) for line in r.text.splitlines() if line.strip()]
        if len(records) >= runs or time.monotonic() > deadline:
            return records
        time.sleep(0.05)


def test_leaving_while_the_upstream_answers_records_that_calls_tokens(
    slow_stream_gateway: tuple[str, str],
) -> None:
    """The upstream bills a call it has begun answering: a client that leaves mid-answer
    cancels the run, and the run's record still has that call's tokens, as the upstream
    reported them (every try: this used to race with the usage chunk)."""
    base_url, mock_url = slow_stream_gateway
    tenant_id, headers = _seed(base_url)
    tries = 3
    for i in range(tries):
        body = {"input": f"tell me about the sea, try {i}", "stream": True}
        with (
            httpx.Client(base_url=base_url, timeout=10) as c,
            c.stream("POST", "/v1/agents/assistant/runs", json=body, headers=headers) as r,
        ):
            for line in r.iter_lines():
                if line == "event: output_text.delta":
                    break  # leave at the first word of the answer
    records = _records(base_url, tenant_id, tries)
    ledger = httpx.get(f"{mock_url}/_mock/ledger").json()
    assert len(ledger) == tries, "one model call per run"
    assert len(records) == tries
    by_text = {call["user_text"]: call for call in ledger}
    for i, record in enumerate(sorted(records, key=lambda rec: rec["created_at"])):
        call = by_text[f"tell me about the sea, try {i}"]
        assert record["status"] == "cancelled", record
        assert record["requests"] == 1, record
        assert record["input_tokens"] == call["input_tokens"], (record, call)
        assert record["output_tokens"] == call["output_tokens"], (record, call)


def test_leaving_while_a_tool_call_is_answered_runs_no_tool_and_no_further_call(
    slow_stream_gateway: tuple[str, str],
) -> None:
    """The answer being streamed is a tool call: it is read to its end and metered, then the
    run stops (no tool runs, no second model call)."""
    base_url, mock_url = slow_stream_gateway
    tenant_id, headers = _seed(base_url)
    body = {"input": "Use the calculator on 6*7", "stream": True}
    seen: list[str] = []
    with (
        httpx.Client(base_url=base_url, timeout=10) as c,
        c.stream("POST", "/v1/agents/assistant/runs", json=body, headers=headers) as r,
    ):
        lines = r.iter_lines()  # kept: a closed iterator would close the connection
        for line in lines:
            if line.startswith("event: "):
                seen.append(line[7:])
                break  # run.created
        # The mock has begun answering (its ledger has the call) and its first segment is out.
        assert wait_until(lambda: len(httpx.get(f"{mock_url}/_mock/ledger").json()) == 1, timeout=5)
        time.sleep(0.06)
    assert seen == ["run.created"]
    (record,) = _records(base_url, tenant_id, 1)
    time.sleep(0.3)  # a second call would have been made by now
    ledger = httpx.get(f"{mock_url}/_mock/ledger").json()
    assert [call["tool_call"] for call in ledger] == ["calculator"]
    assert record["status"] == "cancelled"
    assert record["requests"] == 1
    assert record["input_tokens"] == ledger[0]["input_tokens"]
    assert record["output_tokens"] == ledger[0]["output_tokens"]


def test_a_stalled_answer_is_cut_after_the_disconnect_grace(sqlite_url: str) -> None:
    """A client leaves while the upstream answers, then the upstream stalls: the call is read
    for GATEWAY_STREAM_DISCONNECT_GRACE_S only, then cut, so the run (and its slot) ends."""
    mock_url, stop_mock = start_mock_server(MockConfig(stream_delay_ms=50, stall_seconds=30))
    settings = make_settings(sqlite_url, openai_base_url=mock_url, stream_disconnect_grace_s=0.5)
    base_url, stop = start_gateway_server(settings)
    try:
        tenant_id, headers = _seed(base_url)
        body = {"input": "a long answer, then a stall [[fault:stall]]", "stream": True}
        with (
            httpx.Client(base_url=base_url, timeout=10) as c,
            c.stream("POST", "/v1/agents/assistant/runs", json=body, headers=headers) as r,
        ):
            for line in r.iter_lines():
                if line == "event: output_text.delta":
                    break
        left = time.monotonic()
        (record,) = _records(base_url, tenant_id, 1)
        assert time.monotonic() - left < 5, "cut after the grace, not the 30 s stall"
        assert record["status"] == "cancelled"
        assert record["requests"] == 0  # cut before its usage came: unknown, as documented
    finally:
        stop()
        stop_mock()


def test_leaving_as_the_answer_starts_still_records_that_calls_tokens(
    slow_stream_gateway: tuple[str, str],
) -> None:
    """The client leaves at `run.created`, while the upstream is starting to answer (the
    mock's ledger has the call, no byte of it reached the gateway yet): the call is read when
    it answers and recorded, every try (it was cut after 0.25 s without a first byte, and on a
    loaded host its tokens were lost)."""
    base_url, mock_url = slow_stream_gateway
    tenant_id, headers = _seed(base_url)
    # Warm the path, so that the next calls reach the mock right after run.created.
    warm = {"input": "warm up", "stream": True}
    httpx.post(f"{base_url}/v1/agents/assistant/runs", json=warm, headers=headers, timeout=10)
    tries = 3
    for i in range(tries):
        body = {"input": f"tell me about the moon, try {i}", "stream": True}
        with (
            httpx.Client(base_url=base_url, timeout=10) as c,
            c.stream("POST", "/v1/agents/assistant/runs", json=body, headers=headers) as r,
        ):
            for line in r.iter_lines():
                if line == "event: run.created":
                    break
    records = _records(base_url, tenant_id, 1 + tries)
    ledger = {call["user_text"]: call for call in httpx.get(f"{mock_url}/_mock/ledger").json()}
    by_created = sorted(records, key=lambda rec: rec["created_at"])[1:]
    for i, record in enumerate(by_created):
        call = ledger.get(f"tell me about the moon, try {i}")
        assert record["status"] == "cancelled", record
        if call is None:  # cut before the upstream began: nothing spent, nothing recorded
            assert record["requests"] == 0, record
            continue
        assert record["requests"] == 1, (record, call)
        assert record["input_tokens"] == call["input_tokens"], (record, call)
        assert record["output_tokens"] == call["output_tokens"], (record, call)
