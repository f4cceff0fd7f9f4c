"""An answer cut at the agent's `max_tokens` is an answer on both upstream APIs, plain and
streamed: the run completes with the text up to the limit and its tokens are recorded (the
Agents SDK fails a Responses answer with `status: "incomplete"`; Chat Completions hands over
the cut text). Both databases."""

from __future__ import annotations

from gateway.mock_llm.logic import split_words
from tests.gateway.composition import gw, ledger_sum, put_agent, records, run, streamed
from tests.gateway.conftest import Gateway

__all__ = ["gw"]


@streamed
async def test_an_answer_cut_at_max_tokens_completes_the_run(gw: Gateway, stream: bool) -> None:
    tenant = await gw.create_tenant("acme")
    await put_agent(gw, tenant, "brief", {"model_settings": {"max_tokens": 3}})
    text = f"please explain the whole history of the invoice in detail ({stream})"
    before = len(gw.mock_ledger(text))
    outcome = await run(gw, tenant, "brief", text, stream=stream)
    assert outcome.status == 200, outcome.body
    assert outcome.body["status"] == "completed"
    assert outcome.body["output"] == "".join(split_words(f"Mock answer to: {text}")[:3])
    calls = gw.mock_ledger(text)[before:]
    assert [c["output_tokens"] for c in calls] == [3]  # the upstream stopped at the limit
    assert outcome.body["usage"] == ledger_sum(calls)
    (record,) = await records(gw, tenant)
    assert (record["status"], record["requests"]) == ("completed", 1)
    assert record["total_tokens"] == ledger_sum(calls)["total_tokens"]
