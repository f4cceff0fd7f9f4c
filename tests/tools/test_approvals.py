"""Approvals: a tool with `requires_approval` pauses the run; decisions resume it on any
replica, exactly once; declined calls are never sent; isolation, expiry, limits, usage per
segment, conversations and the APIs that cannot pause."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import httpx
import orjson
import pytest

from tenants.price.money import micro_to_usd
from tests.conftest import make_settings
from tests.gateway.conftest import ADMIN, Gateway, Tenant, gateway_for
from tests.gateway.server import start_gateway_server
from tests.gateway.test_runs_e2e import parse_sse
from tests.identity.conftest import bearer, claims, enable_jwt, sign
from tests.tools.receiver import Receiver, receiver
from tests.waiting import eventually

RUNS = "/v1/agents/assistant/runs"
ASK = 'Use lookup_order {"order_id": "A-1"}'


def approval_agent(url: str) -> dict[str, Any]:
    return {
        "instructions": "Be brief.",
        "model": "mock-model",
        "tools": [
            {
                "type": "http",
                "name": "lookup_order",
                "description": "Find an order.",
                "url": url,
                "parameters": {
                    "type": "object",
                    "properties": {"order_id": {"type": "string"}},
                    "required": ["order_id"],
                },
                "requires_approval": True,
            }
        ],
    }


@pytest.fixture
async def tool() -> AsyncIterator[Receiver]:
    async with receiver() as state:
        yield state


@pytest.fixture
async def gw(database_url: str, mock_llm_base_url: str) -> AsyncIterator[Gateway]:
    async for gateway in gateway_for(database_url, mock_llm_base_url, egress_allow="127.0.0.0/8"):
        yield gateway


async def approving_tenant(gw: Gateway, slug: str, tool: Receiver) -> Tenant:
    tenant = await gw.create_tenant(slug, agent=approval_agent(tool.url("/orders")))
    r = await gw.client.post(f"/admin/tenants/{tenant.id}/tool-secret", headers=ADMIN)
    assert r.status_code == 201
    return tenant


async def paused(gw: Gateway, tenant: Tenant, text: str = ASK, **extra: Any) -> dict[str, Any]:
    r = await gw.client.post(RUNS, json={"input": text, **extra}, headers=tenant.headers)
    assert r.status_code == 200, r.text
    body: dict[str, Any] = r.json()
    assert body["status"] == "requires_action", body
    return body


def decide(run: dict[str, Any], approve: bool, **extra: Any) -> dict[str, Any]:
    return {
        "decisions": [{"id": a["id"], "approve": approve} for a in run["pending_actions"]],
        **extra,
    }


async def test_a_paused_run_resumes_once_after_approval(gw: Gateway, tool: Receiver) -> None:
    tenant = await approving_tenant(gw, "approver", tool)
    run = await paused(gw, tenant)
    assert run["output"] is None
    [action] = run["pending_actions"]
    assert action["tool"] == "lookup_order" and action["arguments"] == {"order_id": "A-1"}
    assert tool.requests == []  # nothing sent before the decision
    shown = await gw.client.get(f"/v1/runs/{run['id']}", headers=tenant.headers)
    assert shown.status_code == 200
    assert shown.json()["status"] == "requires_action"
    assert shown.json()["pending_actions"] == run["pending_actions"]

    actions = f"/v1/runs/{run['id']}/actions"
    r = await gw.client.post(actions, json=decide(run, True), headers=tenant.headers)
    assert r.status_code == 200, r.text
    done = r.json()
    assert done["id"] == run["id"] and done["status"] == "completed"
    assert "A-1" in done["output"]
    assert len(tool.requests) == 1
    again = await gw.client.post(actions, json=decide(run, True), headers=tenant.headers)
    assert again.status_code == 409
    assert len(tool.requests) == 1
    shown = await gw.client.get(f"/v1/runs/{run['id']}", headers=tenant.headers)
    assert shown.json()["status"] == "completed" and shown.json()["output"] == done["output"]
    # One run, one creation time: the resumed answer and the stored run say when it started.
    assert done["created_at"] == run["created_at"] == shown.json()["created_at"]

    # Usage: one record per segment under one run id; the report counts the run once and
    # every token of both segments.
    await gw.flush_usage()
    ledger = gw.mock_ledger(ASK)
    report = (await gw.client.get("/v1/usage?group_by=agent", headers=tenant.headers)).json()
    assert report["totals"]["runs"] == 1
    assert report["totals"]["requests"] == 2 == done["usage"]["requests"]
    assert report["totals"]["total_tokens"] == done["usage"]["total_tokens"]
    assert done["usage"]["total_tokens"] == sum(c["total_tokens"] for c in ledger[-2:])
    # Each segment's record has one of the four record statuses: the paused one ended well.
    export = await gw.client.get("/v1/usage/records", headers=tenant.headers)
    records = [orjson.loads(line) for line in export.text.splitlines() if line.strip()]
    assert [(r["segment"], r["status"]) for r in records] == [(0, "completed"), (1, "completed")]
    # A download that broke after segment 0 resumes from `<run_id>:<segment>` with segment 1
    # (a run id alone says every segment of it was received).
    for cursor, segments in ((f"{run['id']}:0", [1]), (f"{run['id']}:1", []), (run["id"], [])):
        export = await gw.client.get(
            "/v1/usage/records", params={"after": cursor}, headers=tenant.headers
        )
        assert export.status_code == 200, export.text
        lines = [orjson.loads(line) for line in export.text.splitlines() if line.strip()]
        assert [r["segment"] for r in lines] == segments, cursor


async def test_a_call_with_invalid_arguments_asks_nobody(gw: Gateway, tool: Receiver) -> None:
    """Arguments that break `parameters` are never sent: the run does not pause for an
    approval that could not help, the model gets the error output and the run goes on."""
    tenant = await approving_tenant(gw, "acme", tool)
    r = await gw.client.post(
        RUNS, json={"input": 'Use lookup_order {"order_id": 5}'}, headers=tenant.headers
    )
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["status"] == "completed", body
    assert "error: invalid arguments: order_id: 5 is not of type 'string'" in body["output"]
    assert tool.requests == []
    await paused(gw, tenant)  # valid arguments still pause


async def test_deleting_the_agent_cancels_its_waiting_runs(gw: Gateway, tool: Receiver) -> None:
    """A paused run of a deleted agent is cancelled: an agent PUT later under the same name is
    another agent and never finishes it (nor sends its approved call)."""
    tenant = await approving_tenant(gw, "acme", tool)
    run = await paused(gw, tenant)
    r = await gw.client.delete(f"/admin/tenants/{tenant.id}/agents/assistant", headers=ADMIN)
    assert r.status_code == 204, r.text
    shown = await gw.client.get(f"/v1/runs/{run['id']}", headers=tenant.headers)
    assert shown.status_code == 200 and shown.json()["status"] == "cancelled", shown.text
    r = await gw.client.put(
        f"/admin/tenants/{tenant.id}/agents/assistant",
        json=approval_agent(tool.url("/orders")),
        headers=ADMIN,
    )
    assert r.status_code in (200, 201), r.text
    resumed = await gw.client.post(
        f"/v1/runs/{run['id']}/actions", json=decide(run, True), headers=tenant.headers
    )
    assert resumed.status_code == 409 and "cancelled" in resumed.json()["error"]["message"]
    assert tool.requests == []


async def test_a_declined_call_is_never_sent(gw: Gateway, tool: Receiver) -> None:
    tenant = await approving_tenant(gw, "decliner", tool)
    run = await paused(gw, tenant)
    body = decide(run, False)
    body["decisions"][0]["message"] = "Not this one."
    r = await gw.client.post(f"/v1/runs/{run['id']}/actions", json=body, headers=tenant.headers)
    assert r.status_code == 200, r.text
    assert r.json()["status"] == "completed"
    assert "declined" in r.json()["output"] and "Not this one." in r.json()["output"]
    assert tool.requests == []


async def test_decisions_must_match_the_pending_calls(gw: Gateway, tool: Receiver) -> None:
    tenant = await approving_tenant(gw, "matcher", tool)
    run = await paused(gw, tenant)
    actions = f"/v1/runs/{run['id']}/actions"
    for decisions in (
        [{"id": "call_other", "approve": True}],
        [{"id": run["pending_actions"][0]["id"], "approve": "yes"}],  # a JSON boolean only
        [{"id": run["pending_actions"][0]["id"], "approve": 1}],
        [*decide(run, True)["decisions"], *decide(run, False)["decisions"]],
    ):
        r = await gw.client.post(actions, json={"decisions": decisions}, headers=tenant.headers)
        assert r.status_code == 422, r.text
        assert r.json()["error"]["code"] is not None
    # The refused attempts changed nothing: the run still resumes.
    r = await gw.client.post(actions, json=decide(run, True), headers=tenant.headers)
    assert r.status_code == 200 and len(tool.requests) == 1


async def test_streamed_pause_and_streamed_resume(gw: Gateway, tool: Receiver) -> None:
    tenant = await approving_tenant(gw, "streamer", tool)
    r = await gw.client.post(RUNS, json={"input": ASK, "stream": True}, headers=tenant.headers)
    events = parse_sse(r.text)
    name, run = events[-1]
    assert name == "run.requires_action" and run["pending_actions"], events
    assert [n for n, _ in events].count("run.completed") == 0
    pending = run["pending_actions"][0]["id"]
    called = [data for n, data in events if n == "tool.called"]
    assert [c["call_id"] for c in called] == [pending]  # the model's call, as documented
    r = await gw.client.post(
        f"/v1/runs/{run['id']}/actions", json=decide(run, True, stream=True), headers=tenant.headers
    )
    events = parse_sse(r.text)
    names = [n for n, _ in events]
    assert "tool.output" in names and names[-1] == "run.completed", names
    outputs = [data for n, data in events if n == "tool.output"]
    assert outputs[0]["call_id"] == pending  # its output, under the same call id
    assert "A-1" in events[-1][1]["output"]


@pytest.mark.parametrize("stream", [False, True])
async def test_a_failed_resume_shows_its_error(gw: Gateway, tool: Receiver, stream: bool) -> None:
    # The answer after the approved call trips the output guardrail: the resume fails, and the
    # stored run says why, as the resume's own answer did (it said only `failed`).
    agent = {
        **approval_agent(tool.url("/orders")),
        "guardrails": {"output": {"blocked_patterns": ["A-1"]}},
    }
    tenant = await gw.create_tenant("refused", agent=agent)
    r = await gw.client.post(f"/admin/tenants/{tenant.id}/tool-secret", headers=ADMIN)
    assert r.status_code == 201
    run = await paused(gw, tenant)
    r = await gw.client.post(
        f"/v1/runs/{run['id']}/actions",
        json=decide(run, True, stream=stream),
        headers=tenant.headers,
    )
    if stream:
        name, answered = parse_sse(r.text)[-1]
        assert name == "run.failed", r.text
    else:
        assert r.status_code == 400, r.text
        answered = r.json()
    assert answered["error"]["code"] == "guardrail_triggered"
    assert len(tool.requests) == 1
    shown = (await gw.client.get(f"/v1/runs/{run['id']}", headers=tenant.headers)).json()
    assert shown["status"] == "failed" and shown["output"] is None
    assert shown["error"] == {k: v for k, v in answered["error"].items() if k != "retry_after"}
    assert shown["error"]["param"] == answered["error"]["param"] is not None
    assert "pending_actions" not in shown


async def test_other_tenants_and_end_users_get_404(gw: Gateway, tool: Receiver) -> None:
    tenant = await approving_tenant(gw, "owner", tool)
    secret = (await enable_jwt(gw, tenant.id, {"mode": "hs256", "issuer": "owner-iss"}))["secret"]
    alice = bearer(sign(claims("owner-iss", sub="alice"), secret, "HS256"))
    bob = bearer(sign(claims("owner-iss", sub="bob"), secret, "HS256"))
    r = await gw.client.post(RUNS, json={"input": ASK}, headers=alice)
    run = r.json()
    assert run["status"] == "requires_action"
    other = await gw.create_tenant("intruder")
    for headers in (other.headers, bob):
        assert (await gw.client.get(f"/v1/runs/{run['id']}", headers=headers)).status_code == 404
        r = await gw.client.post(
            f"/v1/runs/{run['id']}/actions", json=decide(run, True), headers=headers
        )
        assert r.status_code == 404
    assert tool.requests == []
    r = await gw.client.post(f"/v1/runs/{run['id']}/actions", json=decide(run, True), headers=alice)
    assert r.status_code == 200 and len(tool.requests) == 1


async def test_a_key_deciding_for_an_end_user_keeps_the_run_theirs(
    gw: Gateway, tool: Receiver
) -> None:
    """The tenant's API key may decide an end user's paused run: the tool is still told that
    user, the segment's tokens count for them, and the next pause stays theirs to see."""
    tenant = await approving_tenant(gw, "delegate", tool)
    secret = (await enable_jwt(gw, tenant.id, {"mode": "hs256", "issuer": "dlg-iss"}))["secret"]
    alice = bearer(sign(claims("dlg-iss", sub="alice"), secret, "HS256"))
    twice = f"{ASK} [[tool-calls:2]]"
    r = await gw.client.post(RUNS, json={"input": twice}, headers=alice)
    run = r.json()
    assert run["status"] == "requires_action", run
    r = await gw.client.post(
        f"/v1/runs/{run['id']}/actions", json=decide(run, True), headers=tenant.headers
    )
    again = r.json()
    assert r.status_code == 200 and again["status"] == "requires_action", r.text
    assert orjson.loads(tool.requests[0].body)["user"] == "alice"
    # Paused again after the key's decision: still alice's run (she sees and decides it).
    shown = await gw.client.get(f"/v1/runs/{run['id']}", headers=alice)
    assert shown.status_code == 200 and shown.json()["status"] == "requires_action"
    r = await gw.client.post(
        f"/v1/runs/{run['id']}/actions", json=decide(again, True), headers=alice
    )
    done = r.json()
    assert r.status_code == 200 and done["status"] == "completed", r.text
    assert [orjson.loads(x.body)["user"] for x in tool.requests] == ["alice", "alice"]
    await gw.flush_usage()
    report = (await gw.client.get("/v1/usage?group_by=user", headers=tenant.headers)).json()
    assert [(row["user"], row["total_tokens"]) for row in report["data"]] == [
        ("alice", done["usage"]["total_tokens"])
    ]


async def test_a_row_holding_only_a_resumed_segment_is_flagged_unpriced(
    gw: Gateway, tool: Receiver
) -> None:
    """Another key of the tenant approves: the resumed segment's tokens are that key's, and
    its report row (no run of its own) is still flagged `unpriced` (the model has no price),
    in the rollups' report and in the raw reconciliation report alike."""
    from datetime import date

    from tenants.usage.repository import UsageRepository

    tenant = await approving_tenant(gw, "two-keys", tool)
    keys = f"/admin/tenants/{tenant.id}/keys"
    second = (await gw.client.post(keys, json={"name": "approver"}, headers=ADMIN)).json()
    run = await paused(gw, tenant)
    r = await gw.client.post(
        f"/v1/runs/{run['id']}/actions", json=decide(run, True), headers=bearer(second["key"])
    )
    assert r.status_code == 200 and r.json()["status"] == "completed", r.text
    await gw.flush_usage()
    report = (await gw.client.get("/v1/usage?group_by=key", headers=tenant.headers)).json()
    rows = {row["key"]: row for row in report["data"]}
    approver = rows[second["id"]]
    assert approver["runs"] == 0 and approver["total_tokens"] > 0
    assert approver["unpriced"] is True and approver["cost_usd"] == "0"
    assert rows[tenant.key_id]["runs"] == 1 and rows[tenant.key_id]["unpriced"] is True
    assert report["totals"]["unpriced_runs"] == 1 and report["totals"]["unpriced"] is True
    today = date.fromisoformat(report["end"])
    async with gw.app.state.db.session() as session:
        raw = await UsageRepository(session).raw_report(
            tenant_id=tenant.id, group_by="key", start=today, end=today
        )
    assert [(row["key"], row["unpriced"]) for row in raw["data"]] == [
        (row["key"], row["unpriced"]) for row in report["data"]
    ]


async def test_chat_completions_refuses_an_agent_that_needs_approval(
    gw: Gateway, tool: Receiver
) -> None:
    tenant = await approving_tenant(gw, "chatty", tool)
    r = await gw.client.post(
        "/v1/chat/completions",
        json={"model": "assistant", "messages": [{"role": "user", "content": ASK}]},
        headers=tenant.headers,
    )
    assert r.status_code == 400
    assert r.json()["error"]["code"] == "approval_not_supported"
    assert "assistant" in r.json()["error"]["message"]


async def test_a_paused_run_holds_no_concurrency_slot(gw: Gateway, tool: Receiver) -> None:
    tenant = await approving_tenant(gw, "one-at-a-time", tool)
    r = await gw.client.patch(
        f"/admin/tenants/{tenant.id}", json={"limits": {"max_concurrent_runs": 1}}, headers=ADMIN
    )
    assert r.status_code == 200
    first = await paused(gw, tenant)
    second = await paused(gw, tenant, 'Use lookup_order {"order_id": "B-2"}')
    for run in (first, second):
        r = await gw.client.post(
            f"/v1/runs/{run['id']}/actions", json=decide(run, True), headers=tenant.headers
        )
        assert r.status_code == 200, r.text


async def test_a_resumed_segment_counts_against_the_spend_budget(
    gw: Gateway, tool: Receiver
) -> None:
    # Output at $0.01 a token: each segment's model call is priced when the segment starts.
    price = {"input_per_mtok": "0", "output_per_mtok": "10000"}
    r = await gw.client.put("/admin/models/mock-model/price", json=price, headers=ADMIN)
    assert r.status_code == 200, r.text
    await gw.app.state.prices.load()
    tenant = await approving_tenant(gw, "budgeted", tool)
    r = await gw.client.patch(
        f"/admin/tenants/{tenant.id}", json={"limits": {"spend_per_day_usd": "100"}}, headers=ADMIN
    )
    assert r.status_code == 200, r.text
    run = await paused(gw, tenant)
    r = await gw.client.post(
        f"/v1/runs/{run['id']}/actions", json=decide(run, True), headers=tenant.headers
    )
    assert r.status_code == 200 and r.json()["status"] == "completed", r.text
    await gw.flush_usage()
    report = (await gw.client.get("/v1/usage", headers=tenant.headers)).json()
    cost = report["totals"]["cost_usd"]
    outputs = sum(c["output_tokens"] for c in gw.mock_ledger(ASK)[-2:])
    assert cost == micro_to_usd(outputs * 10_000)
    limits = (await gw.client.get("/v1/limits", headers=tenant.headers)).json()
    # Both segments reserved and settled: the budget's window holds what the records cost.
    assert limits["windows"]["spend_per_day_usd"]["used"] == cost


async def test_a_resume_whose_first_call_cannot_fit_is_refused_before_the_tool_runs(
    gw: Gateway, tool: Receiver
) -> None:
    # The segment's first model call is reserved at admission: a window it cannot fit is a
    # 429 before the approved call is sent, and the run still waits (a retry can resume it).
    # It was run, then the 429, and the approval was lost (409 on every retry).
    tenant = await approving_tenant(gw, "tight-resume", tool)
    limits = {"tokens_per_minute": 10**6}
    r = await gw.client.patch(f"/admin/tenants/{tenant.id}", json={"limits": limits}, headers=ADMIN)
    assert r.status_code == 200, r.text
    run = await paused(gw, tenant)
    used = (await gw.client.get("/v1/limits", headers=tenant.headers)).json()["windows"][
        "tokens_per_minute"
    ]["used"]
    assert used > 0
    limits = {"tokens_per_minute": used + 10}  # room left, but not for the call
    r = await gw.client.patch(f"/admin/tenants/{tenant.id}", json={"limits": limits}, headers=ADMIN)
    assert r.status_code == 200, r.text
    actions = f"/v1/runs/{run['id']}/actions"
    for _ in range(2):
        r = await gw.client.post(actions, json=decide(run, True), headers=tenant.headers)
        assert r.status_code == 429, r.text
        assert r.json()["error"]["code"] == "tokens_per_minute"
        assert int(r.headers["retry-after"]) >= 1
    assert tool.requests == []  # the approved call was not sent
    shown = (await gw.client.get(f"/v1/runs/{run['id']}", headers=tenant.headers)).json()
    assert shown["status"] == "requires_action"
    r = await gw.client.patch(
        f"/admin/tenants/{tenant.id}", json={"limits": {"tokens_per_minute": 10**6}}, headers=ADMIN
    )
    r = await gw.client.post(actions, json=decide(run, True), headers=tenant.headers)
    assert r.status_code == 200 and r.json()["status"] == "completed", r.text
    assert len(tool.requests) == 1


async def test_a_paused_turn_keeps_its_conversation_busy(gw: Gateway, tool: Receiver) -> None:
    tenant = await approving_tenant(gw, "talker", tool)
    conv = (await gw.client.post("/v1/conversations", json={}, headers=tenant.headers)).json()
    run = await paused(gw, tenant, conversation_id=conv["id"])
    r = await gw.client.post(
        RUNS, json={"input": "hello?", "conversation_id": conv["id"]}, headers=tenant.headers
    )
    assert r.status_code == 409 and r.json()["error"]["code"] == "conversation_busy"
    r = await gw.client.post(
        f"/v1/runs/{run['id']}/actions", json=decide(run, True), headers=tenant.headers
    )
    assert r.status_code == 200 and r.json()["conversation_id"] == conv["id"]
    items = (
        await gw.client.get(f"/v1/conversations/{conv['id']}/items", headers=tenant.headers)
    ).json()["data"]
    assert items[0]["content"] == ASK
    assert any(item.get("type") == "function_call_output" for item in items)
    r = await gw.client.post(
        RUNS, json={"input": "thanks", "conversation_id": conv["id"]}, headers=tenant.headers
    )
    assert r.status_code == 200, r.text


async def test_a_waiting_run_expires(
    database_url: str, mock_llm_base_url: str, tool: Receiver
) -> None:
    async for gw in gateway_for(
        database_url, mock_llm_base_url, egress_allow="127.0.0.0/8", run_state_ttl_s=0.5
    ):
        tenant = await approving_tenant(gw, "expiring", tool)
        run = await paused(gw, tenant)
        path = f"/v1/runs/{run['id']}"

        async def gone(gw: Gateway = gw, path: str = path, headers: Any = tenant.headers) -> bool:
            return (await gw.client.get(path, headers=headers)).status_code == 404

        await eventually(gone, timeout=5, what="expiry")
        r = await gw.client.post(f"{path}/actions", json=decide(run, True), headers=tenant.headers)
        assert r.status_code == 404
        assert tool.requests == []


async def test_two_replicas_racing_resume_it_once(
    database_url: str, mock_llm_base_url: str, tool: Receiver
) -> None:
    settings = {"egress_allow": "127.0.0.0/8"}
    async for one in gateway_for(database_url, mock_llm_base_url, **settings):
        async for two in gateway_for(database_url, mock_llm_base_url, **settings):
            tenant = await approving_tenant(one, "racer", tool)
            for attempt in range(3):
                run = await paused(one, tenant, f'Use lookup_order {{"order_id": "R-{attempt}"}}')
                path = f"/v1/runs/{run['id']}/actions"
                results = await asyncio.gather(
                    one.client.post(path, json=decide(run, True), headers=tenant.headers),
                    two.client.post(path, json=decide(run, True), headers=tenant.headers),
                )
                codes = sorted(r.status_code for r in results)
                assert codes == [200, 409], [r.text for r in results]
            assert len(tool.requests) == 3


async def test_a_streamed_resume_the_client_leaves_ends_cancelled_and_frees_the_conversation(
    sqlite_url: str, mock_llm_base_url: str, tool: Receiver
) -> None:
    # A real server: the client's leaving must reach the app as a disconnect.
    settings = make_settings(
        sqlite_url, openai_base_url=mock_llm_base_url, egress_allow="127.0.0.0/8"
    )
    base_url, stop = start_gateway_server(settings)
    try:
        async with httpx.AsyncClient(base_url=base_url, timeout=10) as c:
            r = await c.post("/admin/tenants", json={"slug": "leaver", "name": "l"}, headers=ADMIN)
            tenant_id = r.json()["id"]
            key = (
                await c.post(f"/admin/tenants/{tenant_id}/keys", json={"name": "k"}, headers=ADMIN)
            ).json()["key"]
            agent = approval_agent(tool.url("/orders"))
            await c.put(f"/admin/tenants/{tenant_id}/agents/assistant", json=agent, headers=ADMIN)
            await c.post(f"/admin/tenants/{tenant_id}/tool-secret", headers=ADMIN)
            headers = {"Authorization": f"Bearer {key}"}
            conv = (await c.post("/v1/conversations", json={}, headers=headers)).json()["id"]
            slow = 'Use lookup_order {"order_id": "A-9"} [[latency:1500]]'
            r = await c.post(RUNS, json={"input": slow, "conversation_id": conv}, headers=headers)
            run = r.json()
            assert run["status"] == "requires_action", run
            async with c.stream(
                "POST",
                f"/v1/runs/{run['id']}/actions",
                json=decide(run, True, stream=True),
                headers=headers,
            ) as streamed:
                async for line in streamed.aiter_lines():
                    if line == "event: run.created":
                        break  # leave while the resumed model call is still upstream

            async def ended() -> bool:
                shown = await c.get(f"/v1/runs/{run['id']}", headers=headers)
                return bool(shown.json()["status"] == "cancelled")

            await eventually(ended, timeout=10, what="the resumed run to end cancelled")
            r = await c.post(
                RUNS, json={"input": "thanks", "conversation_id": conv}, headers=headers
            )
            assert r.status_code == 200, r.text  # the conversation takes turns again
    finally:
        stop()


async def handed_off_pause(gw: Gateway, tool: Receiver, slug: str) -> tuple[Tenant, dict[str, Any]]:
    """A run of `triage` paused inside its handoff target `assistant` (the approval agent)."""
    tenant = await approving_tenant(gw, slug, tool)
    triage = {"instructions": "Route.", "model": "mock-model", "handoffs": ["assistant"]}
    r = await gw.client.put(f"/admin/tenants/{tenant.id}/agents/triage", json=triage, headers=ADMIN)
    assert r.status_code == 201, r.text
    r = await gw.client.post(
        "/v1/agents/triage/runs",
        json={"input": f"[[tool-calls:1]] transfer_to_assistant, {ASK}"},
        headers=tenant.headers,
    )
    assert r.status_code == 200, r.text
    run: dict[str, Any] = r.json()
    assert run["status"] == "requires_action", run
    return tenant, run


async def test_a_run_paused_in_a_handoff_target_resumes_on_the_target_version_it_paused_on(
    gw: Gateway, tool: Receiver
) -> None:
    """The approver approved a call to the target's tool as it was shown: a later PUT of the
    target (another URL, or no tool at all) does not change where the approved call goes."""
    tenant, run = await handed_off_pause(gw, tool, "target-pinned")
    target = f"/admin/tenants/{tenant.id}/agents/assistant"
    r = await gw.client.put(target, json=approval_agent(tool.url("/elsewhere")), headers=ADMIN)
    assert r.status_code == 200, r.text
    actions = f"/v1/runs/{run['id']}/actions"
    r = await gw.client.post(actions, json=decide(run, True), headers=tenant.headers)
    assert r.status_code == 200, r.text
    assert r.json()["status"] == "completed", r.text
    assert [request.path for request in tool.requests] == ["/orders"]

    tenant, run = await handed_off_pause(gw, tool, "target-toolless")
    target = f"/admin/tenants/{tenant.id}/agents/assistant"
    r = await gw.client.put(
        target, json={"instructions": "No tools now.", "model": "mock-model"}, headers=ADMIN
    )
    assert r.status_code == 200, r.text
    r = await gw.client.post(
        f"/v1/runs/{run['id']}/actions", json=decide(run, True), headers=tenant.headers
    )
    assert r.status_code == 200, r.text  # was a 502 bad_response: the tool was gone
    assert r.json()["status"] == "completed", r.text
    assert [request.path for request in tool.requests] == ["/orders", "/orders"]


async def test_deleting_a_handoff_target_cancels_the_runs_waiting_in_it(
    gw: Gateway, tool: Receiver
) -> None:
    """The run's graph names the deleted agent: the run ends cancelled (it was a 500 on
    resume, and the run and its conversation stayed stuck until the state's TTL)."""
    tenant, run = await handed_off_pause(gw, tool, "target-deleted")
    r = await gw.client.put(
        f"/admin/tenants/{tenant.id}/agents/triage",
        json={"instructions": "Alone.", "model": "mock-model"},
        headers=ADMIN,
    )
    assert r.status_code == 200, r.text
    r = await gw.client.delete(f"/admin/tenants/{tenant.id}/agents/assistant", headers=ADMIN)
    assert r.status_code == 204, r.text
    shown = await gw.client.get(f"/v1/runs/{run['id']}", headers=tenant.headers)
    assert shown.status_code == 200 and shown.json()["status"] == "cancelled", shown.text
    resumed = await gw.client.post(
        f"/v1/runs/{run['id']}/actions", json=decide(run, True), headers=tenant.headers
    )
    assert resumed.status_code == 409, resumed.text
    assert "cancelled" in resumed.json()["error"]["message"]
    assert tool.requests == []


async def test_a_resume_after_a_newer_version_still_checks_allowed_models(
    gw: Gateway, tool: Receiver
) -> None:
    tenant = await approving_tenant(gw, "allowed-resume", tool)
    run = await paused(gw, tenant)
    r = await gw.client.put(
        f"/admin/tenants/{tenant.id}/agents/assistant",
        json=approval_agent(tool.url("/newer")),
        headers=ADMIN,
    )
    assert r.status_code == 200, r.text
    r = await gw.client.patch(
        f"/admin/tenants/{tenant.id}", json={"allowed_models": ["other-model"]}, headers=ADMIN
    )
    assert r.status_code == 200, r.text
    r = await gw.client.post(
        f"/v1/runs/{run['id']}/actions", json=decide(run, True), headers=tenant.headers
    )
    assert r.status_code == 403, r.text
    assert r.json()["error"]["code"] == "model_not_allowed"
    assert tool.requests == []
