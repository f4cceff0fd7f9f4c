"""Helpers of the composition tests (handoffs, guardrails, structured output): a gateway on
SQLite and PostgreSQL over both upstream APIs, agents PUT through the admin API, runs plain
or streamed, and the usage records the billing export shows."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import orjson
import pytest

from tests.gateway.conftest import ADMIN, Gateway, Tenant, gateway_for
from tests.gateway.test_runs_e2e import parse_sse
from tests.observability.live import parse_metrics, total


@pytest.fixture
async def gw(
    database_url: str, mock_llm_base_url: str, upstream_api: str
) -> AsyncIterator[Gateway]:
    """SQLite and PostgreSQL, Responses and Chat Completions upstreams."""
    async for gateway in gateway_for(
        database_url, mock_llm_base_url, upstream_api=upstream_api, upstream_max_retries=0
    ):
        yield gateway


streamed = pytest.mark.parametrize("stream", [False, True], ids=["plain", "streamed"])


async def put_agent(gw: Gateway, tenant: Tenant, name: str, spec: dict[str, Any]) -> Any:
    r = await gw.client.put(
        f"/admin/tenants/{tenant.id}/agents/{name}",
        json={"model": "mock-model", **spec},
        headers=ADMIN,
    )
    assert r.status_code in (200, 201), r.text
    return r.json()


class Outcome:
    """A run's result as a client sees it: the run object, or the error, and the stream."""

    def __init__(self, status: int, body: Any, events: list[tuple[str, Any]]) -> None:
        self.status = status
        self.body = body
        self.events = events

    @property
    def error(self) -> dict[str, Any]:
        return dict(self.body["error"])

    def named(self, name: str) -> list[Any]:
        return [data for event, data in self.events if event == name]


async def run(
    gw: Gateway,
    tenant: Tenant,
    agent: str,
    text: str,
    *,
    stream: bool,
    conversation_id: str | None = None,
) -> Outcome:
    """Run `agent`; a streamed run's terminal event is its body (the run, or the error)."""
    body: dict[str, Any] = {"input": text, "stream": stream}
    if conversation_id is not None:
        body["conversation_id"] = conversation_id
    r = await gw.client.post(f"/v1/agents/{agent}/runs", json=body, headers=tenant.headers)
    if not stream:
        return Outcome(r.status_code, r.json(), [])
    assert r.status_code == 200, r.text
    events = parse_sse(r.text)
    terminal = [(n, d) for n, d in events if n in ("run.completed", "run.failed")]
    assert len(terminal) == 1 and events[-1] == terminal[0], [n for n, _ in events]
    name, data = terminal[0]
    status = 200 if name == "run.completed" else error_status(data["error"])
    return Outcome(status, data, events)


def error_status(error: dict[str, Any]) -> int:
    """The HTTP status a plain run would have answered with this error."""
    return {
        "guardrail_triggered": 400,
        "invalid_model_output": 502,
        "max_turns_exceeded": 422,
    }.get(error["code"], 500)


async def records(gw: Gateway, tenant: Tenant) -> list[dict[str, Any]]:
    """The tenant's usage records (billing export), oldest first."""
    await gw.flush_usage()
    r = await gw.client.get(
        f"/admin/usage/records?tenant_id={tenant.id}",
        headers={**ADMIN, "Accept": "application/x-ndjson"},
    )
    assert r.status_code == 200, r.text
    return [orjson.loads(line) for line in r.text.splitlines() if line.strip()]


async def metric(gw: Gateway, name: str, **labels: str) -> float:
    r = await gw.client.get("/metrics")
    return total(parse_metrics(r.text), name, **labels)


def ledger_sum(calls: list[dict[str, Any]]) -> dict[str, int]:
    """The usage the mock reported for these calls, as a run's `usage` object."""
    inp = sum(c["input_tokens"] for c in calls)
    out = sum(c["output_tokens"] for c in calls)
    return {
        "requests": len(calls),
        "input_tokens": inp,
        "output_tokens": out,
        "total_tokens": inp + out,
    }
