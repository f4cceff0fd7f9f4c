"""Guardrails as a client sees them: 400 `guardrail_triggered` naming the guardrail (or
`run.failed` when streamed), no model call after an input guardrail trips, usage recorded
with status `failed`, `gateway_guardrails_total` counting; both databases and
upstream APIs. And a catastrophic-backtracking pattern answers in milliseconds (RE2)."""

from __future__ import annotations

import asyncio
import random
import time

import orjson

from gateway.agents.guardrails import PatternSet
from tests.gateway.composition import gw, ledger_sum, metric, put_agent, records, run, streamed
from tests.gateway.conftest import Gateway, gateway_for

__all__ = ["gw"]

GUARDED = {
    "guardrails": {
        "input": {"max_chars": 60, "blocked_patterns": ["forbidden", "banned", "(?i)ssn"]},
        "output": {"blocked_patterns": ["(?i)secret"]},
    }
}
CLASSIFIED = {
    "guardrails": {
        "input": {"classifier": {"instructions": "Flag abuse.", "model": "mock-model-mini"}}
    }
}


@streamed
async def test_input_guardrails_trip_before_any_model_call(gw: Gateway, stream: bool) -> None:
    tenant = await gw.create_tenant("acme")
    await put_agent(gw, tenant, "guarded", GUARDED)
    trips = await metric(gw, "gateway_guardrails_total", tenant="acme", triggered="true")
    cases = [
        (f"my SSN is 123 {stream}", "input.blocked_patterns[2]"),
        (f"{'x' * 61} {stream}", "input.max_chars"),
    ]
    for text, param in cases:
        before = len(gw.mock_ledger(text))
        outcome = await run(gw, tenant, "guarded", text, stream=stream)
        assert outcome.status == 400, outcome.body
        assert outcome.error["code"] == "guardrail_triggered"
        assert outcome.error["type"] == "invalid_request_error"
        assert outcome.error["param"] == param
        assert len(gw.mock_ledger(text)) == before, "no model call after an input trip"
        if stream:
            assert [n for n, _ in outcome.events] == ["run.created", "run.failed"]
    statuses = [(r["status"], r["requests"], r["total_tokens"]) for r in await records(gw, tenant)]
    assert statuses == [("failed", 0, 0)] * 2  # SPEC §10 statuses: the run failed
    after = await metric(gw, "gateway_guardrails_total", tenant="acme", triggered="true")
    assert after - trips == 2


@streamed
async def test_output_guardrail_blocks_the_answer(gw: Gateway, stream: bool) -> None:
    tenant = await gw.create_tenant("acme")
    await put_agent(gw, tenant, "guarded", GUARDED)
    passes = await metric(gw, "gateway_guardrails_total", tenant="acme", triggered="false")
    ok = await run(gw, tenant, "guarded", f"hello {stream}", stream=stream)
    assert ok.status == 200 and ok.body["output"] == f"Mock answer to: hello {stream}"
    text = f"tell me the Secret {stream}"
    before = len(gw.mock_ledger(text))
    outcome = await run(gw, tenant, "guarded", text, stream=stream)
    assert outcome.status == 400
    assert outcome.error["code"] == "guardrail_triggered"
    assert outcome.error["param"] == "output.blocked_patterns[0]"
    assert "output" not in outcome.body
    if stream:
        # The answer's text is held until it passed the check: none of the blocked one sent.
        assert outcome.named("output_text.delta") == []
        names = [n for n, _ in ok.events]
        assert names[0] == "run.created" and names[-1] == "run.completed"
        assert set(names[1:-1]) == {"output_text.delta"}
        released = "".join(d["delta"] for d in ok.named("output_text.delta"))
        assert released == ok.body["output"]
    calls = gw.mock_ledger(text)[before:]
    completed, blocked = await records(gw, tenant)
    assert completed["status"] == "completed"
    assert blocked["status"] == "failed"
    assert blocked["total_tokens"] == ledger_sum(calls)["total_tokens"] > 0  # spent, recorded
    # hello: input + output checks passed; the secret: input passed, output tripped.
    after = await metric(gw, "gateway_guardrails_total", tenant="acme", triggered="false")
    assert after - passes == 3


@streamed
async def test_text_written_beside_a_tool_call_never_reaches_the_client(
    database_url: str, mock_llm_base_url: str, stream: bool
) -> None:
    """Only the final answer is checked against the output patterns, so the text a model
    writes beside a tool call (the mock's `[[preamble]]`) is never streamed, and is not
    stored among the conversation's items when it trips a pattern: it leaked both ways."""
    spec = {"tools": ["calculator"], "guardrails": {"output": {"blocked_patterns": ["(?i)secret"]}}}
    async for gateway in gateway_for(
        database_url, mock_llm_base_url, upstream_api="chat_completions"
    ):
        tenant = await gateway.create_tenant("acme")
        await put_agent(gateway, tenant, "guarded", spec)
        created = await gateway.client.post("/v1/conversations", json={}, headers=tenant.headers)
        conversation = created.json()["id"]
        text = f"Use the calculator on 2+3 for the Secret plan {stream} [[preamble]]"
        outcome = await run(
            gateway, tenant, "guarded", text, stream=stream, conversation_id=conversation
        )
        assert outcome.status == 200, outcome.body
        assert outcome.body["output"] == "The calculator tool returned: 5"
        [first, _] = gateway.mock_ledger(text)[-2:]
        assert first["tool_call"] == "calculator" and first["output_tokens"] > 10  # a preamble
        if stream:
            sent = "".join(d["delta"] for d in outcome.named("output_text.delta"))
            assert sent == outcome.body["output"]
            assert [n for n, _ in outcome.events if n != "output_text.delta"] == [
                "run.created",
                "tool.called",
                "tool.output",
                "run.completed",
            ]
        r = await gateway.client.get(
            f"/v1/conversations/{conversation}/items", headers=tenant.headers
        )
        answers = [
            part.get("text", "")
            for item in r.json()["data"]
            if item.get("role") == "assistant"
            for part in item.get("content", [])
        ]
        assert answers == ["The calculator tool returned: 5"], answers


@streamed
async def test_classifier_runs_first_and_its_tokens_count(gw: Gateway, stream: bool) -> None:
    tenant = await gw.create_tenant("acme")
    await put_agent(gw, tenant, "classified", CLASSIFIED)
    text = f"a fair question {stream}"
    before = len(gw.mock_ledger(text))
    ok = await run(gw, tenant, "classified", text, stream=stream)
    assert ok.status == 200, ok.body
    calls = gw.mock_ledger(text)[before:]
    assert [(c["model"], c["structured"]) for c in calls] == [
        ("mock-model-mini", True),  # the classifier, before the main agent
        ("mock-model", False),
    ]
    assert ok.body["usage"] == ledger_sum(calls)
    assert ok.body["output"] == f"Mock answer to: {text}"

    text = f"an abusive question [[tripwire]] {stream}"
    before = len(gw.mock_ledger(text))
    outcome = await run(gw, tenant, "classified", text, stream=stream)
    assert outcome.status == 400
    assert outcome.error["code"] == "guardrail_triggered"
    assert outcome.error["param"] == "input.classifier"
    calls = gw.mock_ledger(text)[before:]
    assert [c["model"] for c in calls] == ["mock-model-mini"], "the main agent was never called"
    passed, tripped = await records(gw, tenant)
    # The classifier's model is not the agent's: each model's share is kept (and priced) apart.
    assert {m: u["requests"] for m, u in passed["model_usage"].items()} == {
        "mock-model": 1,
        "mock-model-mini": 1,
    }
    assert tripped["status"] == "failed"
    assert tripped["requests"] == 1
    assert tripped["total_tokens"] == ledger_sum(calls)["total_tokens"]
    assert list(tripped["model_usage"]) == ["mock-model-mini"]
    assert tripped["model_usage"]["mock-model-mini"]["total_tokens"] == tripped["total_tokens"]
    assert await metric(gw, "gateway_guardrails_total", tenant="acme", triggered="true") >= 1


async def test_catastrophic_pattern_answers_in_milliseconds(gw: Gateway) -> None:
    # `(x+x+)+y` backtracks exponentially in a backtracking engine (Python's `re` would not
    # finish on this input in a lifetime); RE2 matches in linear time.
    tenant = await gw.create_tenant("acme")
    spec = {"guardrails": {"input": {"blocked_patterns": ["(x+x+)+y", "stop"]}}}
    await put_agent(gw, tenant, "guarded", spec)
    text = "x" * 99_990 + " stop"
    started = time.perf_counter()
    outcome = await run(gw, tenant, "guarded", text, stream=False)
    elapsed = time.perf_counter() - started
    assert outcome.status == 400 and outcome.error["param"] == "input.blocked_patterns[1]"
    assert elapsed < 0.5, elapsed  # the whole request, 100 kB in and a 400 out

    patterns = PatternSet("input.blocked_patterns", ["(x+x+)+y"])
    started = time.perf_counter()
    assert patterns.first_match("x" * 100_000) is None
    assert time.perf_counter() - started < 0.05


COSTLY_PATTERNS = [f"[ab]*a[ab]{{{20 + i}}}c" for i in range(24)]
"""Valid RE2, but each needs a DFA of 2^20+ states: linear time with a large constant
(tens of µs a character for the set), the shape of a tenant pattern that explodes."""


async def test_a_costly_pattern_set_never_stalls_the_worker(gw: Gateway) -> None:
    # The match of a long input runs off the event loop: other requests of the worker are
    # answered meanwhile (it held the loop for seconds: /healthz waited for it).
    random.seed(7)
    text = "".join(random.choice("ab") for _ in range(80_000)) + "a" + "b" * 20 + "c"
    started = time.perf_counter()
    assert PatternSet("p", COSTLY_PATTERNS).first_match(text) == 0
    cost = time.perf_counter() - started
    assert cost > 0.2, f"the set should be costly on this text (took {cost:.3f} s)"

    tenant = await gw.create_tenant("acme")
    spec = {"guardrails": {"input": {"blocked_patterns": COSTLY_PATTERNS}}}
    await put_agent(gw, tenant, "costly", spec)
    guarded = asyncio.create_task(run(gw, tenant, "costly", text, stream=False))
    gaps: list[float] = []
    while not guarded.done():
        started = time.perf_counter()
        health = await gw.client.get("/healthz")
        gaps.append(time.perf_counter() - started)
        assert health.status_code == 200
        await asyncio.sleep(0.01)
    outcome = await guarded
    assert outcome.status == 400 and outcome.error["param"] == "input.blocked_patterns[0]"
    assert len(gaps) >= 5, gaps
    assert max(gaps) < cost / 3, (max(gaps), cost)


async def test_a_costly_set_queues_its_own_tenants_checks_never_anothers(gw: Gateway) -> None:
    # Long texts are matched one at a time per tenant: three runs of a tenant whose set is
    # costly wait for each other, while another tenant's long check goes ahead (it waited
    # behind them all in one shared queue: 13.6 s instead of 0.01 s).
    random.seed(11)
    text = "".join(random.choice("ab") for _ in range(60_000)) + "a" + "b" * 20 + "c"
    started = time.perf_counter()
    assert PatternSet("p", COSTLY_PATTERNS).first_match(text) == 0
    cost = time.perf_counter() - started
    assert cost > 0.15, f"the set should be costly on this text (took {cost:.3f} s)"

    costly = await gw.create_tenant("costly")
    await put_agent(
        gw, costly, "guarded", {"guardrails": {"input": {"blocked_patterns": COSTLY_PATTERNS}}}
    )
    other = await gw.create_tenant("other")
    await put_agent(gw, other, "guarded", {"guardrails": {"input": {"blocked_patterns": ["ssn"]}}})
    heavy = [asyncio.create_task(run(gw, costly, "guarded", text, stream=False)) for _ in range(3)]
    await asyncio.sleep(cost / 4)  # the first long match is on its thread
    light_started = time.perf_counter()
    light = await run(gw, other, "guarded", "z" * 5000 + " my ssn", stream=False)
    light_took = time.perf_counter() - light_started
    outcomes = await asyncio.gather(*heavy)
    assert light.status == 400 and light.error["param"] == "input.blocked_patterns[0]"
    assert all(o.status == 400 for o in outcomes)
    assert light_took < cost / 2, (light_took, cost)


@streamed
async def test_chat_completions_see_the_same_guardrail_error(gw: Gateway, stream: bool) -> None:
    tenant = await gw.create_tenant("acme")
    await put_agent(gw, tenant, "guarded", GUARDED)
    messages = [
        {"role": "system", "content": "be nice"},
        {"role": "user", "content": "here is my ssn"},
    ]
    r = await gw.client.post(
        "/v1/chat/completions",
        json={"model": "guarded", "messages": messages, "stream": stream},
        headers=tenant.headers,
    )
    if stream:
        assert r.status_code == 200
        assert "[DONE]" not in r.text
        error = orjson.loads(r.text.strip().split("\n\n")[-1][6:])["error"]
    else:
        assert r.status_code == 400
        error = r.json()["error"]
    assert (error["code"], error["param"]) == ("guardrail_triggered", "input.blocked_patterns[2]")


async def test_input_checks_apply_to_what_the_request_sent_not_the_history(gw: Gateway) -> None:
    tenant = await gw.create_tenant("acme")
    await put_agent(gw, tenant, "guarded", GUARDED)  # max_chars 60
    conv = (await gw.client.post("/v1/conversations", json={}, headers=tenant.headers)).json()
    for turn in (
        "first turn, forty characters of text...",
        "second turn, again forty characters..",
    ):
        r = await gw.client.post(
            "/v1/agents/guarded/runs",
            json={"input": turn, "conversation_id": conv["id"]},
            headers=tenant.headers,
        )
        assert r.status_code == 200, r.text  # the history is over 60 characters by now
