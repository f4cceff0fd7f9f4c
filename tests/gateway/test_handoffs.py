"""Handoffs between a tenant's agents as a client sees them: the target answers, streams say
`agent.handoff`, the record and usage stay under the entry agent with every model call
counted, a new version of a target is used by the next run, cycles end at `max_turns`;
both databases and upstream APIs."""

from __future__ import annotations

from gateway.agents.builder import build_graph
from tenants.agent.spec import AgentSpec
from tests.gateway.composition import gw, ledger_sum, metric, put_agent, records, run, streamed
from tests.gateway.conftest import ADMIN, Gateway, Tenant

__all__ = ["gw"]

BILLING_ANSWER = 'The transfer_to_billing tool returned: {"assistant": "billing"}'


async def _triage(gw: Gateway, tenant: Tenant) -> None:
    await put_agent(gw, tenant, "billing", {"description": "Invoices and payments"})
    await put_agent(gw, tenant, "refunds", {})
    await put_agent(
        gw,
        tenant,
        "triage",
        {"handoffs": ["billing", {"agent": "refunds", "description": "Refund questions"}]},
    )


@streamed
async def test_handoff_answers_from_the_target_under_the_entry_agent(
    gw: Gateway, stream: bool
) -> None:
    tenant = await gw.create_tenant("acme")
    await _triage(gw, tenant)
    handoffs = await metric(gw, "gateway_handoffs_total", tenant="acme")
    text = f"my invoice is wrong, transfer_to_billing ({stream})"
    before = len(gw.mock_ledger(text))
    outcome = await run(gw, tenant, "triage", text, stream=stream)
    assert outcome.status == 200, outcome.body
    assert outcome.body["output"] == BILLING_ANSWER
    assert outcome.body["agent"] == "triage"
    calls = gw.mock_ledger(text)[before:]
    assert [c["tool_call"] for c in calls] == ["transfer_to_billing", None]
    assert outcome.body["usage"] == ledger_sum(calls)
    if stream:
        assert outcome.named("agent.handoff") == [{"from": "triage", "to": "billing"}]
    (record,) = await records(gw, tenant)
    assert (record["agent"], record["status"], record["requests"]) == ("triage", "completed", 2)
    assert record["total_tokens"] == ledger_sum(calls)["total_tokens"]
    assert await metric(gw, "gateway_handoffs_total", tenant="acme") == handoffs + 1


async def test_a_new_target_version_is_used_by_the_next_run(gw: Gateway) -> None:
    tenant = await gw.create_tenant("acme")
    await _triage(gw, tenant)
    text = "transfer_to_billing please"
    assert (await run(gw, tenant, "triage", text, stream=False)).status == 200
    before = len(gw.mock_ledger(text))
    # Only billing changes: triage keeps its version, its next run hands off to billing v2.
    await put_agent(gw, tenant, "billing", {"model": "mock-model-mini"})
    outcome = await run(gw, tenant, "triage", text, stream=False)
    assert outcome.status == 200
    assert [c["model"] for c in gw.mock_ledger(text)[before:]] == ["mock-model", "mock-model-mini"]
    assert outcome.body["model"] == "mock-model"  # the run's model is the entry agent's


@streamed
async def test_cycles_are_allowed_and_bounded_by_max_turns(gw: Gateway, stream: bool) -> None:
    tenant = await gw.create_tenant("acme")
    await put_agent(gw, tenant, "billing", {})
    await put_agent(gw, tenant, "triage", {"handoffs": ["billing"], "max_turns": 5})
    await put_agent(gw, tenant, "billing", {"handoffs": ["triage"]})
    text = f"transfer_to_billing and back transfer_to_triage ({stream})"
    outcome = await run(gw, tenant, "triage", text, stream=stream)
    assert outcome.status == 200, outcome.body  # triage -> billing -> triage answers
    if stream:
        assert outcome.named("agent.handoff") == [
            {"from": "triage", "to": "billing"},
            {"from": "billing", "to": "triage"},
        ]
    looping = f"{text} [[loop]]"
    before = len(gw.mock_ledger(looping))
    outcome = await run(gw, tenant, "triage", looping, stream=stream)
    assert outcome.status == 422
    assert outcome.error["code"] == "max_turns_exceeded"
    calls = gw.mock_ledger(looping)[before:]
    assert len(calls) == 5
    _, record = await records(gw, tenant)
    assert (record["agent"], record["status"]) == ("triage", "failed")
    assert record["total_tokens"] == ledger_sum(calls)["total_tokens"]


async def test_another_tenants_agent_cannot_be_reached(gw: Gateway) -> None:
    acme = await gw.create_tenant("acme")
    other = await gw.create_tenant("other")
    await _triage(gw, acme)
    for name in ("triage", "billing"):
        r = await gw.client.post(
            f"/v1/agents/{name}/runs", json={"input": "transfer_to_billing"}, headers=other.headers
        )
        assert r.status_code == 404
    await put_agent(gw, other, "billing", {"model": "mock-model-mini"})
    text = "acme only: transfer_to_billing"
    before = len(gw.mock_ledger(text))
    assert (await run(gw, acme, "triage", text, stream=False)).status == 200
    # acme's triage hands off to acme's billing, never to the other tenant's one.
    assert [c["model"] for c in gw.mock_ledger(text)[before:]] == ["mock-model", "mock-model"]


def test_handoff_descriptions_and_tool_names() -> None:
    nodes = {
        "triage": (
            1,
            AgentSpec(handoffs=["billing-desk", {"agent": "refunds", "description": "Refunds"}]),
        ),
        "billing-desk": (3, AgentSpec(description="Invoices")),
        "refunds": (2, AgentSpec()),
    }
    built = build_graph("triage", nodes, default_model="m")
    billing, refunds = built.agent.handoffs
    assert (billing.tool_name, refunds.tool_name) == (
        "transfer_to_billing_desk",
        "transfer_to_refunds",
    )
    assert "Invoices" in billing.tool_description
    assert refunds.tool_description == "Refunds"
    assert built.versions == (("billing-desk", 3), ("refunds", 2), ("triage", 1))


async def test_allowed_models_cover_targets_and_the_classifier(gw: Gateway) -> None:
    tenant = await gw.create_tenant("acme")
    await _triage(gw, tenant)
    await put_agent(gw, tenant, "billing", {"model": "mock-model-mini"})
    path = f"/admin/tenants/{tenant.id}"
    r = await gw.client.patch(path, json={"allowed_models": ["mock-model"]}, headers=ADMIN)
    assert r.status_code == 200, r.text
    classifier = {"classifier": {"instructions": "x", "model": "mock-model-mini"}}
    r = await gw.client.put(
        f"{path}/agents/guarded",
        json={"model": "mock-model", "guardrails": {"input": classifier}},
        headers=ADMIN,
    )
    assert r.status_code == 422
    assert r.json()["error"]["param"] == "guardrails.input.classifier.model"
    # triage's own model is allowed, but the run may reach billing's, which no longer is.
    outcome = await run(gw, tenant, "triage", "transfer_to_billing", stream=False)
    assert outcome.status == 403
    assert outcome.error["code"] == "model_not_allowed"
    assert "mock-model-mini" in outcome.error["message"]
