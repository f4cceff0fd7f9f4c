"""An agent with `output_schema` answers the parsed JSON object: runs (plain and streamed) and
chat completions, both upstream APIs, SQLite and PostgreSQL; an answer that does not follow
the schema fails the run with 502 `invalid_model_output`, its tokens still recorded."""

from __future__ import annotations

import json
import time

import orjson

from tests.gateway.composition import gw, ledger_sum, put_agent, records, run, streamed
from tests.gateway.conftest import ADMIN, Gateway
from tests.gateway.test_runs_e2e import parse_sse

__all__ = ["gw"]

SCHEMA = {
    "type": "object",
    "properties": {
        "status": {"type": "string", "enum": ["shipped", "pending"]},
        "summary": {"type": "string"},
        "items": {"type": "array", "items": {"type": "string"}},
        "eta_days": {"type": ["integer", "null"]},
    },
    "required": ["status", "summary", "items"],
}


@streamed
async def test_run_output_is_the_parsed_object(gw: Gateway, stream: bool) -> None:
    tenant = await gw.create_tenant("acme")
    await put_agent(gw, tenant, "orders", {"output_schema": SCHEMA})
    text = f"where is order 42 (stream={stream})"
    before = len(gw.mock_ledger(text))
    outcome = await run(gw, tenant, "orders", text, stream=stream)
    assert outcome.status == 200, outcome.body
    expected = {
        "status": "shipped",
        "summary": f"Mock answer to: {text}",
        "items": [],
        "eta_days": 0,
    }
    assert outcome.body["output"] == expected
    calls = gw.mock_ledger(text)[before:]
    assert [c["structured"] for c in calls] == [True]
    assert outcome.body["usage"] == ledger_sum(calls)
    if stream:
        deltas = "".join(d["delta"] for d in outcome.named("output_text.delta"))
        assert json.loads(deltas) == expected  # the text as it arrived, then the object


@streamed
async def test_chat_completion_content_is_the_json(gw: Gateway, stream: bool) -> None:
    tenant = await gw.create_tenant("acme")
    await put_agent(gw, tenant, "orders", {"output_schema": SCHEMA})
    text = f"status of order 7 (stream={stream})"
    r = await gw.client.post(
        "/v1/chat/completions",
        json={"model": "orders", "messages": [{"role": "user", "content": text}], "stream": stream},
        headers=tenant.headers,
    )
    assert r.status_code == 200, r.text
    if stream:
        chunks = [
            orjson.loads(line[6:]) for line in r.text.split("\n\n") if line.startswith("data: {")
        ]
        content = "".join(
            c["choices"][0]["delta"].get("content") or "" for c in chunks if c["choices"]
        )
    else:
        content = r.json()["choices"][0]["message"]["content"]
    assert json.loads(content)["summary"] == f"Mock answer to: {text}"


@streamed
async def test_an_answer_off_the_schema_is_502_invalid_model_output(
    gw: Gateway, stream: bool
) -> None:
    tenant = await gw.create_tenant("acme")
    await put_agent(gw, tenant, "orders", {"output_schema": SCHEMA})
    text = f"break it [[invalid-json]] {stream}"
    before = len(gw.mock_ledger(text))
    outcome = await run(gw, tenant, "orders", text, stream=stream)
    assert outcome.status == 502
    assert outcome.error["type"] == "upstream_error"
    assert outcome.error["code"] == "invalid_model_output"
    assert "output schema" in outcome.error["message"]
    calls = gw.mock_ledger(text)[before:]
    (record,) = await records(gw, tenant)
    assert record["status"] == "failed"
    assert record["total_tokens"] == ledger_sum(calls)["total_tokens"] > 0


async def test_a_backtracking_pattern_cannot_stall_the_worker(gw: Gateway) -> None:
    """The answer is checked against the schema's patterns in linear time (Python's `re` takes
    seconds on `(a+)+$` against 27 `a`s and a `!`, holding the event loop); a pattern RE2
    cannot run is 422 at PUT."""
    tenant = await gw.create_tenant("acme")
    schema = {
        "type": "object",
        "properties": {"summary": {"type": "string", "pattern": "^Mock answer to: (a+)+$"}},
        "required": ["summary"],
    }
    await put_agent(gw, tenant, "orders", {"output_schema": schema})
    started = time.perf_counter()
    outcome = await run(gw, tenant, "orders", "a" * 27 + "!", stream=False)
    assert outcome.status == 502 and outcome.error["code"] == "invalid_model_output"
    assert time.perf_counter() - started < 2.5
    outcome = await run(gw, tenant, "orders", "a" * 27, stream=False)
    assert outcome.status == 200 and outcome.body["output"] == {
        "summary": "Mock answer to: " + "a" * 27
    }
    lookahead = {"type": "object", "properties": {"s": {"type": "string", "pattern": "(?!x)"}}}
    r = await gw.client.put(
        f"/admin/tenants/{tenant.id}/agents/other",
        json={"instructions": "x", "output_schema": {**lookahead, "required": ["s"]}},
        headers=ADMIN,
    )
    assert r.status_code == 422 and "RE2" in r.text, r.text


async def test_agents_without_a_schema_still_answer_text(gw: Gateway) -> None:
    tenant = await gw.create_tenant("acme")
    r = await gw.client.post(
        "/v1/agents/assistant/runs", json={"input": "hello", "stream": True}, headers=tenant.headers
    )
    (completed,) = [d for n, d in parse_sse(r.text) if n == "run.completed"]
    assert completed["output"] == "Mock answer to: hello"


@streamed
async def test_output_patterns_see_the_strings_of_a_structured_answer(
    gw: Gateway, stream: bool
) -> None:
    """The answer's `summary` holds "secret<newline>data" and `say "quoted"`: its JSON writes them
    escaped (`\\n`, `\\"`), where the patterns missed them, and the client got them."""
    tenant = await gw.create_tenant("acme")
    guardrails = {"output": {"blocked_patterns": ["secret\\s+data", '"quoted"', "^Mock answer"]}}
    await put_agent(gw, tenant, "orders", {"output_schema": SCHEMA, "guardrails": guardrails})
    for text, index in (("secret\ndata", 0), ('say "quoted"', 1)):
        outcome = await run(gw, tenant, "orders", text, stream=stream)
        assert outcome.status == 400, outcome.body
        assert outcome.body["error"]["param"] == f"output.blocked_patterns[{index}]"
        assert not outcome.named("output_text.delta")  # nothing of it streamed
    # An anchored pattern matches a string at its own start, as a client reads the field.
    outcome = await run(gw, tenant, "orders", "anchored", stream=stream)
    assert outcome.status == 400 and outcome.body["error"]["param"] == "output.blocked_patterns[2]"
    # The model's own text is checked too: what a stream sends, a conversation stores, with
    # its own spacing (the mock writes `"eta_days": 0`; the compact JSON has `"eta_days":0`).
    spaced = {"output": {"blocked_patterns": ['"eta_days": 0']}}
    await put_agent(gw, tenant, "spaced", {"output_schema": SCHEMA, "guardrails": spaced})
    outcome = await run(gw, tenant, "spaced", "plain words", stream=stream)
    assert outcome.status == 400, outcome.body
    assert outcome.body["error"]["param"] == "output.blocked_patterns[0]"
    assert not outcome.named("output_text.delta")
