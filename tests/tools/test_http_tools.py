"""HTTP tools end to end: PUT validation, the signing secret, signed calls to a real receiver on
loopback (allowed through GATEWAY_EGRESS_ALLOW), and every failure as an `error: …` output."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine

from gateway.core.egress import StaticResolver
from tests.gateway.conftest import ADMIN, Gateway, Tenant, gateway_for
from tests.gateway.test_runs_e2e import parse_sse
from tests.observability.live import parse_metrics, total
from tests.tools.receiver import (
    Receiver,
    answering,
    receiver,
    signature_values,
    slow,
    verify_signature,
)

ORDER_SCHEMA = {
    "type": "object",
    "properties": {"order_id": {"type": "string"}},
    "required": ["order_id"],
}


def http_tool(url: str, **overrides: Any) -> dict[str, Any]:
    tool = {
        "type": "http",
        "name": "lookup_order",
        "description": "Find an order by id.",
        "url": url,
        "parameters": ORDER_SCHEMA,
        "timeout_s": 2,
    }
    tool.update(overrides)
    return tool


def agent_with(*tools: Any) -> dict[str, Any]:
    return {"instructions": "Be brief.", "model": "mock-model", "tools": list(tools)}


@pytest.fixture
async def tool_endpoint() -> AsyncIterator[Receiver]:
    async with receiver() as state:
        yield state


@pytest.fixture
async def gw(database_url: str, mock_llm_base_url: str) -> AsyncIterator[Gateway]:
    async for gateway in gateway_for(
        database_url, mock_llm_base_url, egress_allow="127.0.0.0/8", tool_max_response_bytes=1024
    ):
        yield gateway


async def setup_tenant(gw: Gateway, slug: str, *tools: Any) -> tuple[Tenant, str]:
    tenant = await gw.create_tenant(slug, agent=agent_with(*tools))
    r = await gw.client.post(f"/admin/tenants/{tenant.id}/tool-secret", headers=ADMIN)
    assert r.status_code == 201, r.text
    return tenant, r.json()["secret"]


async def run(gw: Gateway, tenant: Tenant, text_in: str, **extra: Any) -> dict[str, Any]:
    r = await gw.client.post(
        "/v1/agents/assistant/runs", json={"input": text_in, **extra}, headers=tenant.headers
    )
    assert r.status_code == 200, r.text
    body: dict[str, Any] = r.json()
    return body


async def put_agent(gw: Gateway, tenant_id: str, spec: dict[str, Any]) -> Any:
    return await gw.client.put(f"/admin/tenants/{tenant_id}/agents/bot", json=spec, headers=ADMIN)


async def test_put_validates_http_tools(gw: Gateway) -> None:
    tenant = await gw.create_tenant("valid")
    ok = http_tool("https://tools.example.com/orders")
    cases = {
        "schema not an object": http_tool(ok["url"], parameters={"type": "string"}),
        "invalid schema": http_tool(ok["url"], parameters={"type": "object", "required": 3}),
        "$ref to nowhere": http_tool(
            ok["url"], parameters={"type": "object", "properties": {"a": {"$ref": "#/$defs/a"}}}
        ),
        "$ref to a remote document": http_tool(
            ok["url"],
            parameters={"type": "object", "properties": {"a": {"$ref": "http://10.0.0.7/s"}}},
        ),
        "clash with built-in": http_tool(ok["url"], name="calculator"),
        "plain http": http_tool("http://tools.example.com/orders"),
        "private literal": http_tool("https://10.0.0.7/orders"),
        "metadata address": http_tool("https://169.254.169.254/latest"),
        "metadata address in hex": http_tool("https://0xa9.0xfe.0xa9.0xfe/latest"),
        "metadata address as one number": http_tool("https://2852039166/latest"),
        "metadata address with a trailing dot": http_tool("https://169.254.169.254./latest"),
        "space in the host": http_tool("https://tools.exa mple.com/orders"),
        "percent-encoded host": http_tool("https://%31%30.0.0.1/orders"),
        "unknown $schema": http_tool(
            ok["url"], parameters={"$schema": "http://example.com/nope", "type": "object"}
        ),
        "pattern RE2 cannot run": http_tool(
            ok["url"],
            parameters={"type": "object", "properties": {"a": {"pattern": "(?=a)b"}}},
        ),
        "property pattern RE2 cannot run": http_tool(
            ok["url"], parameters={"type": "object", "patternProperties": {"(a)\\1": {}}}
        ),
        "timeout too long": http_tool(ok["url"], timeout_s=61),
        "timeout as a string": http_tool(ok["url"], timeout_s="7"),
        "approval as a string": http_tool(ok["url"], requires_approval="yes"),
        "unknown field": {**ok, "retries": 3},
    }
    for case, tool in cases.items():
        r = await put_agent(gw, tenant.id, agent_with(tool))
        assert r.status_code == 422, (case, r.text)
        assert r.json()["error"]["type"] == "invalid_request_error"
    r = await put_agent(gw, tenant.id, agent_with(ok, {**ok, "url": ok["url"] + "/2"}))
    assert r.status_code == 422 and "twice" in r.text
    r = await put_agent(gw, tenant.id, agent_with("calculator", ok))
    assert r.status_code == 201, r.text
    assert r.json()["spec"]["tools"][1]["url"] == ok["url"]
    # Loopback over http is allowed here: the test deployment allows 127.0.0.0/8.
    r = await put_agent(gw, tenant.id, agent_with(http_tool("http://127.0.0.1:9/x")))
    assert r.status_code == 200, r.text
    # ... but written as an address only some resolvers read (`127.1`), it is refused.
    r = await put_agent(gw, tenant.id, agent_with(http_tool("http://127.1:9/x")))
    assert r.status_code == 422 and "dotted-decimal" in r.text


async def test_tool_secret_is_shown_once_stored_encrypted_and_audited(
    gw: Gateway, database_url: str
) -> None:
    tenant = await gw.create_tenant("secretive")
    path = f"/admin/tenants/{tenant.id}/tool-secret"
    assert (await gw.client.get(path, headers=ADMIN)).status_code == 404
    first = await gw.client.post(path, headers=ADMIN)
    assert first.status_code == 201
    secret = first.json()["secret"]
    assert len(secret) >= 32 and first.json()["previous_expires_at"] is None
    shown = await gw.client.get(path, headers=ADMIN)
    assert shown.status_code == 200 and secret not in shown.text
    second = await gw.client.post(path, headers=ADMIN)
    assert second.status_code == 200
    assert second.json()["secret"] != secret and second.json()["previous_expires_at"]
    engine = create_async_engine(database_url)
    try:
        async with engine.connect() as conn:
            rows = (await conn.execute(text("SELECT * FROM tool_secrets"))).all()
    finally:
        await engine.dispose()
    stored = " ".join(str(value) for row in rows for value in row)
    assert secret not in stored and second.json()["secret"] not in stored
    audit = await gw.client.get(f"/admin/audit?tenant_id={tenant.id}", headers=ADMIN)
    actions = [event["action"] for event in audit.json()["data"]]
    assert "tool_secret.create" in actions and "tool_secret.rotate" in actions
    assert secret not in audit.text
    other = await gw.create_tenant("other-secret")
    # Another tenant's id in the path only ever reaches that tenant's row.
    assert (
        await gw.client.get(f"/admin/tenants/{other.id}/tool-secret", headers=ADMIN)
    ).status_code == 404
    assert (
        await gw.client.post("/admin/tenants/ten_missing/tool-secret", headers=ADMIN)
    ).status_code == 404


async def test_a_tool_call_is_signed_and_its_answer_is_the_output(
    gw: Gateway, tool_endpoint: Receiver
) -> None:
    tenant, secret = await setup_tenant(gw, "signed", http_tool(tool_endpoint.url("/orders")))
    body = await run(gw, tenant, 'Use lookup_order {"order_id": "A-17"}')
    assert body["status"] == "completed"
    assert len(tool_endpoint.requests) == 1
    request = tool_endpoint.requests[0]
    assert request.path == "/orders"
    assert request.headers["Content-Type"] == "application/json"
    assert verify_signature(request.headers["X-Gateway-Signature"], request.body, secret)
    assert not verify_signature(request.headers["X-Gateway-Signature"], request.body, "wrong")
    assert not verify_signature(request.headers["X-Gateway-Signature"], request.body + b" ", secret)
    payload = orjson.loads(request.body)
    assert payload == {
        "tool": "lookup_order",
        "arguments": {"order_id": "A-17"},
        "run_id": body["id"],
        "agent": "assistant",
        "tenant": tenant.id,
        "user": None,
    }
    assert '"order_id":"A-17"' in body["output"].replace(" ", "")


async def test_after_a_rotation_both_secrets_sign(gw: Gateway, tool_endpoint: Receiver) -> None:
    tenant, old = await setup_tenant(gw, "rotating", http_tool(tool_endpoint.url("/orders")))
    r = await gw.client.post(f"/admin/tenants/{tenant.id}/tool-secret", headers=ADMIN)
    new = r.json()["secret"]
    await run(gw, tenant, 'Use lookup_order {"order_id": "B-2"}')
    header = tool_endpoint.requests[-1].headers["X-Gateway-Signature"]
    assert len(signature_values(header)["v1"]) == 2
    body = tool_endpoint.requests[-1].body
    assert verify_signature(header, body, new) and verify_signature(header, body, old)


async def test_failures_become_error_outputs_and_the_run_goes_on(
    gw: Gateway, tool_endpoint: Receiver
) -> None:
    tool_endpoint.handlers["/500"] = answering(500, "database down")
    tool_endpoint.handlers["/slow"] = slow
    tool_endpoint.handlers["/redirect"] = answering(
        302, headers={"Location": "http://169.254.169.254/latest/meta-data"}
    )
    tool_endpoint.handlers["/big"] = answering(200, "x" * 5000)
    cases = {
        "/500": "error: the tool endpoint answered HTTP 500: database down",
        "/slow": "error: the tool endpoint did not answer within 0.5 s",
        "/redirect": "error: the tool endpoint answered HTTP 302",
        "/big": "[truncated: the response was longer than 1024 bytes]",
    }
    for index, (path, expected) in enumerate(cases.items()):
        slug = f"failing-{index}"
        tenant, _ = await setup_tenant(gw, slug, http_tool(tool_endpoint.url(path), timeout_s=0.5))
        body = await run(gw, tenant, 'Use lookup_order {"order_id": "C-3"}')
        assert body["status"] == "completed", (path, body)
        assert expected in body["output"], (path, body["output"])
    # The redirect was not followed: only the four tool calls reached anything.
    assert [request.path for request in tool_endpoint.requests] == list(cases)


async def test_invalid_arguments_send_no_request(gw: Gateway, tool_endpoint: Receiver) -> None:
    schema = {
        "type": "object",
        "properties": {"order_id": {"type": "integer"}},
        "required": ["order_id"],
    }
    tenant, _ = await setup_tenant(
        gw, "strict", http_tool(tool_endpoint.url("/orders"), parameters=schema)
    )
    body = await run(gw, tenant, 'Use lookup_order {"order_id": "not a number"}')
    assert (
        "error: invalid arguments: order_id: 'not a number' is not of type 'integer'"
        in (body["output"])
    )
    assert tool_endpoint.requests == []


async def test_a_backtracking_pattern_cannot_stall_the_worker(
    gw: Gateway, tool_endpoint: Receiver
) -> None:
    """A schema pattern is matched in linear time: with Python's backtracking `re`, `^(a+)+$`
    against 27 `a`s and a `!` holds the event loop for seconds (minutes at 35)."""
    schema = {
        "type": "object",
        "properties": {"order_id": {"type": "string", "pattern": "^(a+)+$"}},
        "patternProperties": {"^(b+)+$": {"type": "string"}},
        "additionalProperties": False,
    }
    tenant, _ = await setup_tenant(
        gw, "redos", http_tool(tool_endpoint.url("/orders"), parameters=schema)
    )
    evil = "a" * 27 + "!"
    started = time.perf_counter()
    body = await run(gw, tenant, f'Use lookup_order {{"order_id": "{evil}"}}')
    assert f"error: invalid arguments: order_id: '{evil}' does not match" in body["output"]
    key = "b" * 27 + "!"
    body = await run(gw, tenant, f'Use lookup_order {{"order_id": "aaa", "{key}": "x"}}')
    assert "error: invalid arguments" in body["output"] and key in body["output"]
    assert time.perf_counter() - started < 2.5
    assert tool_endpoint.requests == []
    body = await run(gw, tenant, 'Use lookup_order {"order_id": "aaa", "bbb": "x"}')
    assert "error" not in body["output"]
    assert len(tool_endpoint.requests) == 1


async def scrape(gw: Gateway) -> dict[Any, float]:
    return parse_metrics((await gw.client.get("/metrics")).text)


async def test_a_name_resolving_to_a_private_address_is_refused(gw: Gateway) -> None:
    tenant, _ = await setup_tenant(gw, "rebind", http_tool("https://tools.example.test/orders"))
    gw.app.state.http_tools.resolver = StaticResolver({"tools.example.test": ["10.20.30.40"]})
    before = await scrape(gw)
    body = await run(gw, tenant, 'Use lookup_order {"order_id": "D-4"}')
    assert "error: the tool URL is not allowed" in body["output"]
    assert "private address" in body["output"]
    after = await scrape(gw)

    def delta(name: str, **labels: str) -> float:
        return total(after, name, **labels) - total(before, name, **labels)

    assert delta("gateway_egress_refusals_total", stage="connect") == 1
    labels = {"tool": "lookup_order", "tool_type": "http", "status": "refused"}
    assert delta("gateway_tool_calls_total", **labels) == 1
    assert delta("gateway_tool_call_duration_seconds_count", tool_type="http") == 1


async def test_without_a_secret_the_call_is_not_sent(gw: Gateway, tool_endpoint: Receiver) -> None:
    tenant = await gw.create_tenant(
        "unsigned", agent=agent_with(http_tool(tool_endpoint.url("/orders")))
    )
    body = await run(gw, tenant, 'Use lookup_order {"order_id": "E-5"}')
    assert "error: this tenant has no tool-signing secret" in body["output"]
    assert tool_endpoint.requests == []


async def test_streamed_run_shows_the_tool_call_and_output(
    gw: Gateway, tool_endpoint: Receiver
) -> None:
    tenant, _ = await setup_tenant(gw, "streamer", http_tool(tool_endpoint.url("/orders")))
    r = await gw.client.post(
        "/v1/agents/assistant/runs",
        json={"input": 'Use lookup_order {"order_id": "F-6"}', "stream": True},
        headers=tenant.headers,
    )
    events = parse_sse(r.text)
    names = [name for name, _ in events]
    assert "tool.called" in names and "tool.output" in names and names[-1] == "run.completed"
    called = next(data for name, data in events if name == "tool.called")
    assert called["name"] == "lookup_order"
    output = next(data for name, data in events if name == "tool.output")
    assert "F-6" in output["output"]


async def test_the_documented_receiver_verifies_a_real_call(
    gw: Gateway, tool_endpoint: Receiver
) -> None:
    docs = (Path(__file__).parents[2] / "docs" / "tools.md").read_text()
    code = docs.split("```python\n", 1)[1].split("```", 1)[0]
    assert len(code.strip().splitlines()) <= 10
    namespace: dict[str, Any] = {}
    exec(code, namespace)  # noqa: S102 (our own documentation)
    tenant, secret = await setup_tenant(gw, "documented", http_tool(tool_endpoint.url("/o")))
    await run(gw, tenant, 'Use lookup_order {"order_id": "G-7"}')
    request = tool_endpoint.requests[-1]
    header = request.headers["X-Gateway-Signature"]
    assert namespace["verify"](header, request.body, secret)
    assert not namespace["verify"](header, request.body, secret + "x")
