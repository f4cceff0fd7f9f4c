"""MCP servers as tools, against a real MCP server on loopback: the allowed tools are offered
and called, the connection is reused across runs, a server that is down is a clear 502 within
its timeout, and an MCP tool can require approval."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest

from gateway.runs.streaming import tool_output_text
from tests.gateway.conftest import ADMIN, Gateway, gateway_for
from tests.gateway.test_runs_e2e import parse_sse
from tests.tools.mcp_server import McpStats, mcp_server

RUNS = "/v1/agents/assistant/runs"


@pytest.fixture(scope="module")
def crm() -> Iterator[McpStats]:
    with mcp_server() as stats:
        yield stats


@pytest.fixture
async def gw(sqlite_url: str, mock_llm_base_url: str) -> AsyncIterator[Gateway]:
    async for gateway in gateway_for(sqlite_url, mock_llm_base_url, egress_allow="127.0.0.0/8"):
        yield gateway


def assert_unavailable(r: Any) -> None:
    """A JSON 502 `mcp_server_unavailable` naming the server (`crm`)."""
    assert r.status_code == 502, r.text
    assert r.headers["content-type"].startswith("application/json"), r.headers
    assert r.json()["error"]["code"] == "mcp_server_unavailable"
    assert "crm" in r.json()["error"]["message"]


def mcp_agent(url: str, **extra: Any) -> dict[str, Any]:
    tool = {"type": "mcp", "name": "crm", "url": url, "allowed_tools": ["find_customer"]}
    tool.update(extra)
    return {"instructions": "Be brief.", "model": "mock-model", "tools": [tool]}


async def test_allowed_tools_are_offered_and_called_on_one_connection(
    gw: Gateway, crm: McpStats
) -> None:
    tenant = await gw.create_tenant("mcp-user", agent=mcp_agent(crm.url))
    sessions, lists, calls = crm.sessions, crm.lists, len(crm.calls)
    for name in ("ann", "bob"):
        r = await gw.client.post(
            RUNS, json={"input": f'Use find_customer {{"name": "{name}"}}'}, headers=tenant.headers
        )
        assert r.status_code == 200, r.text
        assert f"customer {name}: tier gold" in r.json()["output"]
    assert crm.calls[calls:] == ["find_customer", "find_customer"]
    assert crm.sessions - sessions == 1  # one connection served both runs
    assert crm.lists - lists == 1  # and the tool list was fetched once
    # A tool outside allowed_tools is never offered: the model cannot call it.
    r = await gw.client.post(
        RUNS, json={"input": 'Use delete_customer {"name": "ann"}'}, headers=tenant.headers
    )
    assert r.status_code == 200
    assert "delete_customer" not in crm.calls


async def test_a_streamed_mcp_call_shows_its_output_as_text(gw: Gateway, crm: McpStats) -> None:
    # `tool.output` carries the text the model read, as for an HTTP tool (it was the Python
    # repr of the MCP content part: "{'type': 'text', 'text': …}").
    tenant = await gw.create_tenant("mcp-stream", agent=mcp_agent(crm.url))
    r = await gw.client.post(
        RUNS,
        json={"input": 'Use find_customer {"name": "eve"}', "stream": True},
        headers=tenant.headers,
    )
    events = parse_sse(r.text)
    outputs = [data["output"] for name, data in events if name == "tool.output"]
    assert len(outputs) == 1 and outputs[0].startswith("customer eve: tier gold"), outputs
    assert events[-1][0] == "run.completed"


async def test_a_connection_a_call_found_broken_is_opened_again(gw: Gateway) -> None:
    """The server goes away mid-life and comes back on the same address: the failed call is
    an error output the model sees, and the next run connects anew (not the dead session)."""
    ask = {"input": 'Use find_customer {"name": "ann"}'}
    with mcp_server() as first:
        tenant = await gw.create_tenant("mcp-flaky", agent=mcp_agent(first.url, timeout_s=3))
        r = await gw.client.post(RUNS, json=ask, headers=tenant.headers)
        assert "customer ann: tier gold" in r.json()["output"], r.text
        port = int(first.url.split(":")[2].split("/")[0])
    r = await gw.client.post(RUNS, json=ask, headers=tenant.headers)
    assert r.status_code in (200, 502), r.text  # the call fails (or the reconnect does)
    assert "tier gold" not in r.text
    with mcp_server(port) as second:
        for _ in range(2):  # the first run after the failure reconnects; the next reuses it
            r = await gw.client.post(RUNS, json=ask, headers=tenant.headers)
            assert r.status_code == 200, r.text
            assert "customer ann: tier gold" in r.json()["output"]
        assert second.calls == ["find_customer", "find_customer"]
        assert second.sessions == 1


async def test_a_long_result_is_cut_before_the_model_sees_it(
    sqlite_url: str, mock_llm_base_url: str, crm: McpStats
) -> None:
    # 5,000 lines (~120 kB) against a 1 kB bound: the model sees 1 kB and a marker, as an
    # HTTP tool's long body.
    async for gw in gateway_for(
        sqlite_url, mock_llm_base_url, egress_allow="127.0.0.0/8", tool_max_response_bytes=1024
    ):
        agent = mcp_agent(crm.url, allowed_tools=["export_customers", "find_customer"])
        tenant = await gw.create_tenant("mcp-long", agent=agent)
        r = await gw.client.post(
            RUNS, json={"input": 'Use export_customers {"count": 5000}'}, headers=tenant.headers
        )
        assert r.status_code == 200, r.text
        output = r.json()["output"]
        assert "customer 0: tier gold" in output
        assert "customer 4999" not in output
        assert output.endswith("[truncated: the tool's output was longer than 1024 bytes]")
        assert len(output.encode()) < 1024 + 200
        # A short result is whole.
        r = await gw.client.post(
            RUNS, json={"input": 'Use find_customer {"name": "dee"}'}, headers=tenant.headers
        )
        assert "customer dee: tier gold" in r.json()["output"]
        assert "truncated" not in r.json()["output"]


async def test_a_server_that_is_down_fails_the_run_clearly_and_quickly(gw: Gateway) -> None:
    tenant = await gw.create_tenant(
        "mcp-down", agent=mcp_agent("http://127.0.0.1:9/mcp", timeout_s=2)
    )
    started = time.monotonic()
    r = await gw.client.post(RUNS, json={"input": "hello"}, headers=tenant.headers)
    assert r.status_code == 502, r.text
    assert r.json()["error"]["code"] == "mcp_server_unavailable"
    assert "crm" in r.json()["error"]["message"]
    assert time.monotonic() - started < 10


async def test_a_redirect_is_not_followed_even_within_the_origin(
    gw: Gateway, crm: McpStats
) -> None:
    """No redirect is followed, also one to the same host and port (the MCP SDK follows those
    unless told otherwise): the run fails clearly and the endpoint behind it is never asked."""
    redirecting = crm.url.replace("/mcp", "/redirect")
    tenant = await gw.create_tenant("mcp-redirect", agent=mcp_agent(redirecting, timeout_s=5))
    sessions, redirects = crm.sessions, crm.redirects
    r = await gw.client.post(RUNS, json={"input": "hello"}, headers=tenant.headers)
    assert r.status_code == 502, r.text
    assert r.json()["error"]["code"] == "mcp_server_unavailable"
    assert crm.redirects > redirects  # the redirect was answered
    assert crm.sessions == sessions  # and not followed to /mcp


async def test_a_server_that_is_not_an_mcp_server_says_so(gw: Gateway) -> None:
    """Reachable, but not an MCP server (here the mock LLM, which answers 404): the error says
    it may not speak MCP, not only that it could not be reached."""
    tenant = await gw.create_tenant("mcp-not", agent=mcp_agent(f"{gw.mock_url}/mcp", timeout_s=5))
    r = await gw.client.post(RUNS, json={"input": "hello"}, headers=tenant.headers)
    assert r.status_code == 502, r.text
    assert r.json()["error"]["code"] == "mcp_server_unavailable"
    assert "did not answer as an MCP server" in r.json()["error"]["message"]


async def test_mcp_urls_pass_the_egress_guard_at_put(gw: Gateway) -> None:
    tenant = await gw.create_tenant("mcp-put")
    r = await gw.client.put(
        f"/admin/tenants/{tenant.id}/agents/bad",
        json=mcp_agent("https://169.254.169.254/mcp"),
        headers=ADMIN,
    )
    assert r.status_code == 422 and r.json()["error"]["code"] == "url_not_allowed"


async def test_an_mcp_tool_can_require_approval(gw: Gateway, crm: McpStats) -> None:
    tenant = await gw.create_tenant(
        "mcp-approver", agent=mcp_agent(crm.url, requires_approval=True)
    )
    calls = len(crm.calls)
    r = await gw.client.post(
        RUNS, json={"input": 'Use find_customer {"name": "cy"}'}, headers=tenant.headers
    )
    run = r.json()
    assert run["status"] == "requires_action", run
    assert run["pending_actions"][0]["tool"] == "find_customer"
    assert len(crm.calls) == calls
    decisions = [{"id": a["id"], "approve": True} for a in run["pending_actions"]]
    r = await gw.client.post(
        f"/v1/runs/{run['id']}/actions", json={"decisions": decisions}, headers=tenant.headers
    )
    assert r.status_code == 200, r.text
    assert "customer cy: tier gold" in r.json()["output"]
    assert crm.calls[calls:] == ["find_customer"]


async def test_an_mcp_call_with_invalid_arguments_asks_nobody(gw: Gateway, crm: McpStats) -> None:
    """Arguments that break the tool's input schema: no pause (nobody is asked to approve a
    call that can only fail), the model gets the `error:` output and the run completes."""
    tenant = await gw.create_tenant(
        "mcp-bad-args", agent=mcp_agent(crm.url, requires_approval=True)
    )
    calls = len(crm.calls)
    r = await gw.client.post(
        RUNS,
        json={"input": 'Use find_customer {"nom": "cy"}', "stream": True},
        headers=tenant.headers,
    )
    events = parse_sse(r.text)
    assert events[-1][0] == "run.completed", events
    outputs = [data["output"] for name, data in events if name == "tool.output"]
    assert len(outputs) == 1 and outputs[0].startswith("error:"), outputs
    assert "name" in outputs[0]
    assert crm.calls[calls:] == []  # refused before it was sent


async def test_a_declined_mcp_call_is_counted_as_an_mcp_call(gw: Gateway, crm: McpStats) -> None:
    """It was counted with `tool_type="http"`: MCP declines showed up as HTTP traffic."""
    tenant = await gw.create_tenant(
        "mcp-decliner", agent=mcp_agent(crm.url, requires_approval=True)
    )
    before = await mcp_declines(gw)
    r = await gw.client.post(
        RUNS, json={"input": 'Use find_customer {"name": "dee"}'}, headers=tenant.headers
    )
    run = r.json()
    assert run["status"] == "requires_action", run
    decisions = [{"id": a["id"], "approve": False} for a in run["pending_actions"]]
    r = await gw.client.post(
        f"/v1/runs/{run['id']}/actions", json={"decisions": decisions}, headers=tenant.headers
    )
    assert r.status_code == 200, r.text
    assert await mcp_declines(gw) == before + 1


async def mcp_declines(gw: Gateway) -> float:
    text = (await gw.client.get("/metrics")).text
    wanted = ('tool="find_customer"', 'tool_type="mcp"', 'status="declined"')
    for line in text.splitlines():
        if line.startswith("gateway_tool_calls_total{") and all(w in line for w in wanted):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


async def test_tool_names_offered_twice_are_422_at_put(gw: Gateway) -> None:
    tenant = await gw.create_tenant("mcp-twice")
    url = "https://mcp.example.com/mcp"
    crm = {"type": "mcp", "name": "crm", "url": url, "allowed_tools": ["find_customer"]}
    http = {"type": "http", "name": "lookup", "url": "https://tools.example.com/lookup"}
    cases = {
        "both allow one name": [crm, {**crm, "name": "crm2", "url": url + "/2"}],
        "one server twice, unfiltered": [
            {"type": "mcp", "name": "a", "url": url},
            {"type": "mcp", "name": "b", "url": url},
        ],
        "an HTTP tool's name": [http, {**crm, "allowed_tools": ["lookup"]}],
        "a built-in's name": ["calculator", {**crm, "allowed_tools": ["calculator"]}],
    }
    for case, tools in cases.items():
        spec = {"instructions": "x", "model": "mock-model", "tools": tools}
        r = await gw.client.put(f"/admin/tenants/{tenant.id}/agents/bot", json=spec, headers=ADMIN)
        assert r.status_code == 422, (case, r.text)
        assert r.json()["error"]["param"] == "tools", case
    # Disjoint filters on one server are fine.
    tools = [crm, {**crm, "name": "crm2", "allowed_tools": ["delete_customer"]}]
    r = await gw.client.put(
        f"/admin/tenants/{tenant.id}/agents/bot",
        json={"instructions": "x", "model": "mock-model", "tools": tools},
        headers=ADMIN,
    )
    assert r.status_code == 201, r.text


async def test_a_url_with_a_space_is_422_at_put(gw: Gateway) -> None:
    """A URL pasted with a blank around it was stored, then every run failed (502)."""
    tenant = await gw.create_tenant("mcp-space")
    for index, tool in enumerate(
        (
            {"type": "mcp", "name": "crm", "url": "https://mcp.example.com/mcp "},
            {"type": "http", "name": "lookup", "url": " https://tools.example.com/lookup"},
        )
    ):
        spec = {"instructions": "x", "model": "mock-model", "tools": [tool]}
        r = await gw.client.put(
            f"/admin/tenants/{tenant.id}/agents/bot{index}", json=spec, headers=ADMIN
        )
        assert r.status_code == 422, r.text
        assert r.json()["error"]["param"] == "tools.0.url", r.text
        assert "spaces" in r.json()["error"]["message"]


async def test_an_allowed_tool_listed_twice_is_422_at_put(gw: Gateway) -> None:
    tenant = await gw.create_tenant("mcp-dup")
    crm = {
        "type": "mcp",
        "name": "crm",
        "url": "https://mcp.example.com/mcp",
        "allowed_tools": ["find_customer", "find_customer"],
    }
    spec = {"instructions": "x", "model": "mock-model", "tools": [crm]}
    r = await gw.client.put(f"/admin/tenants/{tenant.id}/agents/bot", json=spec, headers=ADMIN)
    assert r.status_code == 422, r.text
    assert r.json()["error"]["param"] == "tools.0.allowed_tools"
    assert "'find_customer' is listed twice" in r.json()["error"]["message"]


async def test_a_clash_only_the_servers_lists_reveal_is_a_clear_502(
    gw: Gateway, crm: McpStats
) -> None:
    """Two URLs of one server, both unfiltered: the PUT cannot know they are the same server;
    the run is refused with a clear error, not a 500."""
    tools = [
        {"type": "mcp", "name": "a", "url": crm.url},
        {"type": "mcp", "name": "b", "url": crm.url + "?again=1"},
    ]
    servers = await gw.create_tenant(
        "mcp-clash", agent={"instructions": "x", "model": "mock-model", "tools": tools}
    )
    r = await gw.client.post(RUNS, json={"input": "hello"}, headers=servers.headers)
    assert r.status_code == 502, r.text
    assert r.json()["error"]["code"] == "tool_name_conflict"
    assert "find_customer" in r.json()["error"]["message"]
    assert "include_server_in_tool_names" not in r.json()["error"]["message"]  # SDK internals
    # An HTTP tool named as one of an unfiltered server's tools: the same 502, not the
    # server's tool silently dropped (the model was offered the HTTP one only).
    http = {
        "type": "http",
        "name": "find_customer",
        "description": "Our own lookup.",
        "url": "http://127.0.0.1:9/lookup",
        "parameters": {"type": "object", "properties": {}},
    }
    tools = [{"type": "mcp", "name": "crm", "url": crm.url}, http]
    tenant = await gw.create_tenant(
        "mcp-clash-http", agent={"instructions": "x", "model": "mock-model", "tools": tools}
    )
    r = await gw.client.post(RUNS, json={"input": "hello"}, headers=tenant.headers)
    assert r.status_code == 502, r.text
    error = r.json()["error"]
    assert error["code"] == "tool_name_conflict" and "'find_customer'" in error["message"]
    # Found at admission, as an unreachable server is: a streamed run's answer is the JSON
    # 502 before any event, and no run is recorded (it was `run.created`, then `run.failed`).
    for clashing in (servers, tenant):
        r = await gw.client.post(
            RUNS, json={"input": "hi", "stream": True}, headers=clashing.headers
        )
        assert r.status_code == 502, r.text
        assert r.headers["content-type"].startswith("application/json")
        assert r.json()["error"]["code"] == "tool_name_conflict"
    await gw.flush_usage()
    for clashing in (servers, tenant):
        report = (await gw.client.get("/v1/usage", headers=clashing.headers)).json()
        assert report["totals"]["runs"] == 0, report


def test_tool_outputs_are_text_or_json() -> None:
    cut = [{"type": "text", "text": "zzz"}, {"type": "text", "text": "\n[truncated: …]"}]
    assert tool_output_text(cut) == "zzz\n[truncated: …]"
    assert tool_output_text("plain") == "plain"
    assert tool_output_text({"type": "image", "data": "AA=="}) == '{"type":"image","data":"AA=="}'


async def test_a_failed_mcp_call_tells_the_model_why(gw: Gateway, crm: McpStats) -> None:
    # As an HTTP tool's failures: `error: …` with the reason (the SDK's default said only "An
    # error occurred while running the tool"), and the timeout counted as `timeout`.
    allowed = ["slow_lookup", "failing_lookup", "find_customer"]
    agent = mcp_agent(crm.url, allowed_tools=allowed, timeout_s=1)
    tenant = await gw.create_tenant("mcp-failing", agent=agent)
    timeouts = await tool_calls(gw, "slow_lookup", "timeout")
    cases = {
        'Use slow_lookup {"seconds": 3}': (
            "error: the MCP server did not answer within the tool's timeout_s"
        ),
        # The server's own error result (it hides the exception: its choice), as it said it.
        'Use failing_lookup {"name": "zed"}': "Error executing tool failing_lookup",
        'Use find_customer {"nom": "zed"}': "error: Failed to call tool 'find_customer' on MCP"
        " server 'crm': missing required parameters: name",
    }
    for text, expected in cases.items():
        r = await gw.client.post(RUNS, json={"input": text}, headers=tenant.headers)
        assert r.status_code == 200, r.text
        output = r.json()["output"]
        assert expected in output, (text, output)
        assert "An error occurred while running the tool" not in output
    assert await tool_calls(gw, "slow_lookup", "timeout") == timeouts + 1


async def tool_calls(gw: Gateway, tool: str, status: str) -> float:
    text = (await gw.client.get("/metrics")).text
    prefix = "gateway_tool_calls_total{"
    for line in text.splitlines():
        if line.startswith(prefix) and f'tool="{tool}"' in line and f'status="{status}"' in line:
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def test_each_mcp_failure_is_told_apart() -> None:
    from mcp.shared.exceptions import MCPError
    from mcp_types import CONNECTION_CLOSED, REQUEST_TIMEOUT

    from gateway.tools.mcp import failure_output

    said = {
        (REQUEST_TIMEOUT, "Request 'tools/call' timed out"): "did not answer within",
        (REQUEST_TIMEOUT, "busy, try later"): "answered an error: busy, try later",
        (CONNECTION_CLOSED, "Connection closed"): "could not be reached or broke off",
        # A session server killed mid-answer (it was "answered an error: SSE stream …").
        (CONNECTION_CLOSED, "SSE stream ended without a response"): "could not be reached or",
        (CONNECTION_CLOSED, "Server error: no such row"): "answered an error: Server error",
    }
    for (code, message), expected in said.items():
        output = failure_output(None, MCPError(code, message))  # type: ignore[arg-type]
        assert output.startswith("error: ") and expected in output, (code, message, output)


async def test_one_connection_per_tenant_and_server_across_agents_and_versions(
    gw: Gateway, crm: McpStats
) -> None:
    """Two agents naming one server, and a new version of one of them, share the tenant's
    connection; the new version fetches its own tool list. Another tenant has its own."""
    ask = {"input": 'Use find_customer {"name": "ann"}'}
    tenant = await gw.create_tenant("mcp-shared", agent=mcp_agent(crm.url))
    r = await gw.client.put(
        f"/admin/tenants/{tenant.id}/agents/helper", json=mcp_agent(crm.url), headers=ADMIN
    )
    assert r.status_code in (200, 201), r.text
    sessions, lists = crm.sessions, crm.lists
    for agent in ("assistant", "helper", "assistant"):
        r = await gw.client.post(f"/v1/agents/{agent}/runs", json=ask, headers=tenant.headers)
        assert "customer ann: tier gold" in r.json()["output"], r.text
    assert crm.sessions - sessions == 1  # one connection served both agents
    assert crm.lists - lists == 2  # each agent's version has its own tool list
    spec = mcp_agent(crm.url, allowed_tools=["find_customer", "delete_customer"])
    r = await gw.client.put(
        f"/admin/tenants/{tenant.id}/agents/assistant", json=spec, headers=ADMIN
    )
    assert r.status_code in (200, 201), r.text
    r = await gw.client.post(
        RUNS, json={"input": 'Use delete_customer {"name": "ann"}'}, headers=tenant.headers
    )
    assert r.status_code == 200, r.text
    assert crm.calls[-1] == "delete_customer"  # the new version's list was fetched anew
    assert crm.sessions - sessions == 1  # on the same connection
    assert crm.lists - lists == 3
    other = await gw.create_tenant("mcp-shared-other", agent=mcp_agent(crm.url))
    r = await gw.client.post(RUNS, json=ask, headers=other.headers)
    assert "customer ann: tier gold" in r.json()["output"], r.text
    assert crm.sessions - sessions == 2  # another tenant never shares a connection


async def test_a_call_refused_before_it_is_sent_keeps_the_connection(
    gw: Gateway, crm: McpStats
) -> None:
    tenant = await gw.create_tenant("mcp-refused", agent=mcp_agent(crm.url))
    ask = {"input": 'Use find_customer {"name": "ann"}'}
    r = await gw.client.post(RUNS, json=ask, headers=tenant.headers)
    assert "customer ann: tier gold" in r.json()["output"], r.text
    sessions, calls = crm.sessions, len(crm.calls)
    r = await gw.client.post(
        RUNS, json={"input": 'Use find_customer {"nom": "ann"}'}, headers=tenant.headers
    )
    assert r.status_code == 200, r.text
    assert len(crm.calls) == calls  # refused: nothing was sent
    r = await gw.client.post(RUNS, json=ask, headers=tenant.headers)
    assert "customer ann: tier gold" in r.json()["output"], r.text
    assert crm.sessions == sessions  # and the pooled connection was kept


async def test_a_handoff_target_s_mcp_server_is_connected(gw: Gateway, crm: McpStats) -> None:
    # Only the entry agent's servers were connected: a handoff target's tool list was a 500.
    tenant = await gw.create_tenant("mcp-handoff", agent=mcp_agent(crm.url))
    triage = {"instructions": "Route.", "model": "mock-model", "handoffs": ["assistant"]}
    r = await gw.client.put(f"/admin/tenants/{tenant.id}/agents/triage", json=triage, headers=ADMIN)
    assert r.status_code in (200, 201), r.text
    r = await gw.client.post(
        "/v1/agents/triage/runs",
        json={"input": '[[tool-calls:1]] transfer_to_assistant, find_customer {"name": "ann"}'},
        headers=tenant.headers,
    )
    assert r.status_code == 200, r.text
    assert "customer ann: tier gold" in r.json()["output"], r.text


async def test_a_handoff_target_s_server_that_is_down_is_a_clear_502(gw: Gateway) -> None:
    down = mcp_agent("http://127.0.0.1:9/mcp", timeout_s=2)
    tenant = await gw.create_tenant("mcp-handoff-down", agent=down)
    triage = {"instructions": "Route.", "model": "mock-model", "handoffs": ["assistant"]}
    r = await gw.client.put(f"/admin/tenants/{tenant.id}/agents/triage", json=triage, headers=ADMIN)
    assert r.status_code in (200, 201), r.text
    run = "/v1/agents/triage/runs"
    r = await gw.client.post(run, json={"input": "hello"}, headers=tenant.headers)
    assert r.status_code == 200, r.text  # not handed off: the server is never needed
    r = await gw.client.post(run, json={"input": "transfer_to_assistant"}, headers=tenant.headers)
    assert_unavailable(r)
    r = await gw.client.post(
        run, json={"input": "transfer_to_assistant", "stream": True}, headers=tenant.headers
    )
    events = parse_sse(r.text)
    assert events[-1][0] == "run.failed", events
    assert events[-1][1]["error"]["code"] == "mcp_server_unavailable"


async def test_a_server_whose_tool_list_fails_is_a_clear_502(gw: Gateway) -> None:
    """It answers the connection but not `tools/list` (an error): 502
    `mcp_server_unavailable` naming it, plain and streamed (it was a 500)."""
    with mcp_server() as broken:
        broken.fail_lists = True
        tenant = await gw.create_tenant("mcp-badlist", agent=mcp_agent(broken.url, timeout_s=3))
        r = await gw.client.post(RUNS, json={"input": "hello"}, headers=tenant.headers)
        assert_unavailable(r)
        # Listed at admission: a streamed run's answer is the JSON 502, before any event.
        r = await gw.client.post(
            RUNS, json={"input": "hello", "stream": True}, headers=tenant.headers
        )
        assert_unavailable(r)


async def test_a_run_whose_server_goes_away_mid_run_goes_on(gw: Gateway) -> None:
    """The pooled connection's server is gone: the call is an `error:` output and the run
    completes (the next turn did not reconnect and fail the run with a 502)."""
    ask = {"input": 'Use find_customer {"name": "ann"}'}
    with mcp_server() as first:
        tenant = await gw.create_tenant("mcp-gone", agent=mcp_agent(first.url, timeout_s=3))
        r = await gw.client.post(RUNS, json=ask, headers=tenant.headers)
        assert "customer ann: tier gold" in r.json()["output"], r.text
    for stream in (False, True):
        r = await gw.client.post(RUNS, json={**ask, "stream": stream}, headers=tenant.headers)
        if not stream:
            # The first run learns at its call; a later one is refused at admission (502).
            assert r.status_code == 200, r.text
            assert r.json()["status"] == "completed"
            assert "could not be reached or broke off" in r.json()["output"], r.text
        else:
            assert r.status_code == 502, r.text
            assert r.json()["error"]["code"] == "mcp_server_unavailable"


async def test_concurrent_calls_of_one_agent_run_at_once(gw: Gateway, crm: McpStats) -> None:
    tenant = await gw.create_tenant("mcp-parallel", agent=mcp_agent(crm.url, allowed_tools=None))
    ask = {"input": 'Use slow_lookup {"seconds": 1}'}
    crm.max_in_flight = 0
    started = time.monotonic()
    answers = await asyncio.gather(
        *(gw.client.post(RUNS, json=ask, headers=tenant.headers) for _ in range(4))
    )
    assert all("slow answer" in r.json()["output"] for r in answers), [r.text for r in answers]
    assert crm.max_in_flight == 4  # they were one at a time: 4 s for 4 calls
    assert time.monotonic() - started < 3


async def test_one_call_timing_out_fails_no_other_call(gw: Gateway, crm: McpStats) -> None:
    """A slow call past `timeout_s` is its own `error:` output; calls of other runs on the
    same connection, in flight or queued, still get their answers (they were told the server
    broke off, one of them after the server had run it)."""
    agent = mcp_agent(crm.url, allowed_tools=None, timeout_s=2)
    tenant = await gw.create_tenant("mcp-timeout-alone", agent=agent)
    slow = asyncio.create_task(
        gw.client.post(
            RUNS, json={"input": 'Use slow_lookup {"seconds": 6}'}, headers=tenant.headers
        )
    )
    await asyncio.sleep(0.3)
    quick = await asyncio.gather(
        *(
            gw.client.post(
                RUNS,
                json={"input": f'Use find_customer {{"name": "c{i}"}}'},
                headers=tenant.headers,
            )
            for i in range(3)
        )
    )
    for i, r in enumerate(quick):
        assert f"customer c{i}: tier gold" in r.json()["output"], r.text
    r = await slow
    assert "did not answer within the tool's timeout_s" in r.json()["output"], r.text


async def test_a_session_server_that_restarted_is_reconnected(gw: Gateway) -> None:
    """A server with MCP sessions restarts while no run needs it: the first call on the old
    session learns it ("Session not found", an error output), and the next run opens a new
    session (the connection was kept, and every later call failed, until the gateway
    restarted)."""
    ask = {"input": 'Use find_customer {"name": "ann"}'}
    with mcp_server(legacy=True) as first:
        tenant = await gw.create_tenant("mcp-legacy", agent=mcp_agent(first.url, timeout_s=3))
        r = await gw.client.post(RUNS, json=ask, headers=tenant.headers)
        assert "customer ann: tier gold" in r.json()["output"], r.text
        port = int(first.url.split(":")[2].split("/")[0])
    with mcp_server(port, legacy=True) as second:
        r = await gw.client.post(RUNS, json=ask, headers=tenant.headers)
        assert "Session not found" in r.json()["output"], r.text
        r = await gw.client.post(RUNS, json=ask, headers=tenant.headers)
        assert "customer ann: tier gold" in r.json()["output"], r.text
        assert second.sessions == 1 and second.calls == ["find_customer"]


async def test_runs_starting_together_fetch_the_tool_list_once(gw: Gateway, crm: McpStats) -> None:
    tenant = await gw.create_tenant("mcp-list-once", agent=mcp_agent(crm.url))
    lists = crm.lists
    answers = await asyncio.gather(
        *(gw.client.post(RUNS, json={"input": "hello"}, headers=tenant.headers) for _ in range(5))
    )
    assert all(r.status_code == 200 for r in answers), [r.text for r in answers]
    assert crm.lists - lists == 1


async def test_runs_waiting_for_a_hung_tool_list_fail_together(gw: Gateway) -> None:
    """One list request in flight: the runs that start meanwhile share its outcome, so a
    server that never answers `tools/list` fails them all within `timeout_s`, not one
    `timeout_s` after another."""
    with mcp_server() as hung:
        tenant = await gw.create_tenant("mcp-hung-list", agent=mcp_agent(hung.url, timeout_s=1))
        hung.hang_lists = True
        started = time.monotonic()
        answers = await asyncio.gather(
            *(gw.client.post(RUNS, json={"input": "hi"}, headers=tenant.headers) for _ in range(4))
        )
        elapsed = time.monotonic() - started
        hung.hang_lists = False
        for r in answers:
            assert r.status_code == 502, r.text
            assert r.json()["error"]["code"] == "mcp_server_unavailable"
        assert hung.lists == 1
        assert elapsed < 3, elapsed
