"""The gateway's own series, in-process: tenant cap, metrics token, model-call metrics."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import pytest

from observability import metrics
from tests.gateway.conftest import Gateway, gateway_for
from tests.observability.live import parse_metrics, total

RUNS = "/v1/agents/assistant/runs"


@pytest.fixture
async def gw(sqlite_url: str, mock_llm_base_url: str) -> AsyncIterator[Gateway]:
    async for gateway in gateway_for(sqlite_url, mock_llm_base_url):
        yield gateway


class Changes:
    """How much a metric's samples (those with `labels`) grew between two scrapes."""

    def __init__(self, before: dict[Any, float], after: dict[Any, float]) -> None:
        self.before, self.after = before, after

    def __call__(self, name: str, **labels: str) -> float:
        return total(self.after, name, **labels) - total(self.before, name, **labels)


async def scrape(gw: Gateway, **headers: str) -> dict[Any, float]:
    r = await gw.client.get("/metrics", headers=headers)
    assert r.status_code == 200
    return parse_metrics(r.text)


async def test_tenants_beyond_the_cap_are_counted_as_other(
    sqlite_url: str, mock_llm_base_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A fresh label set for this test (the real one is per process).
    monkeypatch.setattr(metrics, "_tenants", metrics._TenantLabels(limit=1000))
    async for gw in gateway_for(sqlite_url, mock_llm_base_url, metrics_max_tenants=2):
        before = await scrape(gw)
        # A tenant may be called `other`: it never shares its series with the overflow.
        for slug in ("other", "cap-two", "cap-three", "cap-four"):
            tenant = await gw.create_tenant(slug)
            r = await gw.client.post(RUNS, json={"input": "hi"}, headers=tenant.headers)
            assert r.status_code == 200
        r = await gw.client.get("/metrics")
        after = parse_metrics(r.text)
    assert "cap-three" not in r.text and "cap-four" not in r.text
    for label, runs in (("other", 1), ("cap-two", 1), ("_other", 2)):
        delta = total(after, "gateway_runs_total", tenant=label) - total(
            before, "gateway_runs_total", tenant=label
        )
        assert delta == runs, label


async def test_metrics_token_is_required_when_configured(
    sqlite_url: str, mock_llm_base_url: str
) -> None:
    token = "scrape-secret-0123456789"
    async for gw in gateway_for(sqlite_url, mock_llm_base_url, metrics_token=token):
        assert (await gw.client.get("/metrics")).status_code == 401
        r = await gw.client.get("/metrics", headers={"Authorization": "Bearer nope"})
        assert r.status_code == 401 and r.json()["error"]["type"] == "authentication_error"
        r = await gw.client.get("/metrics", headers={"Authorization": f"Bearer {token}"})
        assert r.status_code == 200 and "gateway_runs_total" in r.text
        # The scheme is case-insensitive, as on the API's routes (`bearer` was a 401).
        r = await gw.client.get("/metrics", headers={"Authorization": f"bearer {token}"})
        assert r.status_code == 200
        for wrong in (f"Basic {token}", token, f"Bearer {token}x", f"Bearer{token}"):
            r = await gw.client.get("/metrics", headers={"Authorization": wrong})
            assert r.status_code == 401, wrong


async def test_tool_calls_latency_first_token_and_quota_are_measured(gw: Gateway) -> None:
    tenant = await gw.create_tenant("measured")
    r = await gw.client.patch(
        f"/admin/tenants/{tenant.id}",
        json={"limits": {"tokens_per_day": 50_000}},
        headers={"Authorization": f"Bearer {_admin()}"},
    )
    assert r.status_code == 200, r.text
    before = await scrape(gw)
    r = await gw.client.post(
        RUNS, json={"input": "What is 6*7? Use the calculator."}, headers=tenant.headers
    )
    assert r.status_code == 200
    r = await gw.client.post(
        RUNS, json={"input": "stream me", "stream": True}, headers=tenant.headers
    )
    assert r.status_code == 200 and "output_text.delta" in r.text
    after = await scrape(gw)

    delta = Changes(before, after)

    assert (
        delta("gateway_tool_calls_total", tool="calculator", tool_type="builtin", status="ok") == 1
    )
    # Two model calls for the tool run (call the tool, then answer), one for the stream.
    assert delta("gateway_upstream_request_duration_seconds_count", status="ok") == 3
    assert delta("gateway_model_calls_total", tenant="measured") == 3
    labels = {"tenant": "measured", "agent": "assistant"}
    assert delta("gateway_time_to_first_token_seconds_count", **labels) == 1
    assert total(after, "gateway_tenant_tokens_per_day_limit", tenant="measured") == 50_000
    assert total(after, "gateway_runs_in_flight", tenant="measured") == 0


async def test_a_builtin_call_with_invalid_arguments_tells_the_model_why_and_is_counted(
    gw: Gateway,
) -> None:
    """The SDK refuses such a call before the function runs: the model (and the stream's
    `tool.output`) gets the reason, as from an HTTP tool, and the call is counted."""
    tenant = await gw.create_tenant("miscalled")
    before = await scrape(gw)
    body = {"input": 'Use calculator for {"wrong": 1}', "stream": True}
    r = await gw.client.post(RUNS, json=body, headers=tenant.headers)
    assert r.status_code == 200 and "event: run.completed" in r.text, r.text
    [output] = [
        json.loads(line.removeprefix("data: "))["output"]
        for event in r.text.split("\n\n")
        if event.startswith("event: tool.output")
        for line in event.splitlines()
        if line.startswith("data: ")
    ]
    assert output == "error: invalid arguments: 'expression' is a required property"
    after = await scrape(gw)
    labels = {"tool": "calculator", "tool_type": "builtin"}
    for status, calls in (("invalid_arguments", 1), ("ok", 0), ("error", 0)):
        counted = total(after, "gateway_tool_calls_total", status=status, **labels)
        assert counted - total(before, "gateway_tool_calls_total", status=status, **labels) == calls


def _admin() -> str:
    from tests.conftest import ADMIN_TOKEN

    return ADMIN_TOKEN


async def test_http_series_keep_route_templates_across_repeated_and_many_paths(
    gw: Gateway, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The route lookup is remembered per path: a small memory so that it fills and starts again.
    from observability.exposition import RouteCachedMiddleware

    monkeypatch.setattr(RouteCachedMiddleware, "MAX_PATHS", 3)
    tenant = await gw.create_tenant("routes")
    before = await scrape(gw)
    for _ in range(3):
        r = await gw.client.post(RUNS, json={"input": "hi"}, headers=tenant.headers)
        assert r.status_code == 200
    for n in range(5):  # concrete paths of one template, more than the memory holds
        r = await gw.client.get(f"/v1/runs/run_missing{n}", headers=tenant.headers)
        assert r.status_code == 404
    r = await gw.client.post(RUNS, json={"input": "hi"}, headers=tenant.headers)
    assert r.status_code == 200
    after = await scrape(gw)

    def delta(handler: str, method: str, status: str) -> float:
        labels = {"handler": handler, "method": method, "status": status}
        return total(after, "http_requests_total", **labels) - total(
            before, "http_requests_total", **labels
        )

    assert delta("/v1/agents/{name}/runs", "POST", "200") == 4
    assert delta("/v1/runs/{run_id}", "GET", "404") == 5
    assert not any(
        name == "http_requests_total" and ("handler", f"/v1/runs/run_missing{n}") in labels
        for (name, labels) in after
        for n in range(5)
    )


async def test_a_body_over_the_limit_is_counted_under_its_route(gw: Gateway) -> None:
    """A 413 is an answer a dashboard's error ratio must see: it was refused before the HTTP
    metrics looked, so it was never counted."""
    tenant = await gw.create_tenant("big-bodies")
    limit = gw.app.state.settings.max_body_bytes
    before = await scrape(gw)
    r = await gw.client.post(
        RUNS,
        content=b'{"input": "' + b"a" * limit + b'"}',
        headers={**tenant.headers, "Content-Type": "application/json"},
    )
    assert r.status_code == 413
    after = await scrape(gw)
    labels = {"handler": "/v1/agents/{name}/runs", "method": "POST", "status": "413"}
    counted = total(after, "http_requests_total", **labels)
    assert counted - total(before, "http_requests_total", **labels) == 1


async def test_model_call_metrics_come_from_the_runs_hooks_without_spans(
    gw: Gateway, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No exporter and no debug span logs: runs make no spans (they cost CPU for nobody), and
    the model-call latency is still measured, a call that failed under its upstream status."""
    from agents.tracing import get_trace_provider

    started: list[str] = []
    provider = get_trace_provider()
    original = provider.create_trace

    def spy(*args: Any, **kwargs: Any) -> Any:
        trace = original(*args, **kwargs)
        if not kwargs.get("disabled"):
            started.append(str(kwargs.get("name") or (args[0] if args else "")))
        return trace

    monkeypatch.setattr(provider, "create_trace", spy)
    tenant = await gw.create_tenant("spanless")
    before = await scrape(gw)
    r = await gw.client.post(RUNS, json={"input": "hi"}, headers=tenant.headers)
    assert r.status_code == 200
    r = await gw.client.post(RUNS, json={"input": "hi [[fault:500]]"}, headers=tenant.headers)
    assert r.status_code == 502
    after = await scrape(gw)
    assert not [name for name in started if name.startswith("spanless/")]

    delta = Changes(before, after)

    assert delta("gateway_upstream_request_duration_seconds_count", status="ok") == 1
    # The failed call is timed under the status it is counted under (the upstream's 500).
    assert delta("gateway_upstream_request_duration_seconds_count", status="500") == 1
    assert delta("gateway_upstream_requests_total", status="500") == 1
    assert delta("gateway_upstream_request_duration_seconds_count", status="error") == 0


@pytest.fixture(params=["lean", "openai"])
async def either_client(
    request: pytest.FixtureRequest, sqlite_url: str, mock_llm_base_url: str
) -> AsyncIterator[Gateway]:
    """A gateway on the lean upstream client, and on the stock one."""
    async for gateway in gateway_for(sqlite_url, mock_llm_base_url, upstream_client=request.param):
        yield gateway


async def test_retried_upstream_attempts_are_counted_apart_from_model_calls(
    either_client: Gateway,
) -> None:
    """A flaky upstream shows in `gateway_upstream_retries_total` even when a retry saves the
    call (`gateway_upstream_requests_total` counts each model call once, by how it ended), on
    either upstream client (the stock one's retries were not counted)."""
    gw = either_client
    tenant = await gw.create_tenant("retried")
    before = await scrape(gw)
    r = await gw.client.post(RUNS, json={"input": "hi"}, headers=tenant.headers)
    assert r.status_code == 200
    r = await gw.client.post(RUNS, json={"input": "hi [[fault:503]]"}, headers=tenant.headers)
    assert r.status_code == 502
    after = await scrape(gw)

    delta = Changes(before, after)

    # GATEWAY_UPSTREAM_MAX_RETRIES (2): two failed attempts retried, the third one final.
    assert delta("gateway_upstream_retries_total", model="mock-model", status="503") == 2
    assert delta("gateway_upstream_retries_total") == 2
    assert delta("gateway_upstream_requests_total", status="503") == 1
    assert delta("gateway_upstream_requests_total", status="ok") == 1
