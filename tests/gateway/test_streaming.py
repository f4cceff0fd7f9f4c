"""Streaming behaviour a client notices: keep-alives, failures as events, disconnects."""

from __future__ import annotations

import time
from collections.abc import Iterator

import httpx
import pytest

from tests.conftest import ADMIN_TOKEN, make_settings
from tests.gateway.conftest import AGENT_SPEC, gateway_for, live_usage
from tests.gateway.server import start_gateway_server
from tests.gateway.test_runs_e2e import parse_sse

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
                break  # leave while the second model call is still waiting upstream
    assert seen[0] == "run.created" and "tool.called" in seen
    totals = live_usage(live_gateway, tenant_id, 1)["totals"]
    elapsed = time.monotonic() - started
    calls = httpx.get(f"{mock_llm_base_url}/_mock/ledger").json()[ledger_before:]
    first_call = calls[0]
    assert totals["runs"] == 1
    assert totals["requests"] == 1
    assert totals["input_tokens"] == first_call["input_tokens"]
    assert totals["output_tokens"] == first_call["output_tokens"]
    # The run was cancelled, not completed: the record came before a second 1.5 s call ended.
    assert elapsed < 1.5 + 1.5
    metrics = httpx.get(f"{live_gateway}/metrics").text
    assert 'gateway_runs_total{agent="assistant",status="cancelled",tenant="live"}' in metrics
