"""A run that calls more than its own model (a handoff target on another model) is priced
per model, as a client and a billing reader see it: the record's cost is each model's calls at
that model's price, the record and the export show each model's share, the by-model report
puts each share on its model, the token and spend metrics count each model's own tokens, and
a spend limit reserves a target's call at the target's price. Both databases, both upstream
APIs."""

from __future__ import annotations

from datetime import date
from typing import Any

from gateway.core.clock import utcnow
from tenants.price.money import usd
from tenants.price.pricing import Price
from tests.gateway.composition import gw, metric, put_agent, records, run, streamed
from tests.gateway.conftest import ADMIN, Gateway, Tenant
from tests.tenants.test_usage_rollups import assert_reports_agree

__all__ = ["gw"]

ENTRY, TARGET = "mock-model", "mock-model-mini"
# USD per million tokens; the target is 25 to 50 times dearer than the entry model.
PRICES = {
    ENTRY: {"input_per_mtok": "0.40", "output_per_mtok": "1.60"},
    TARGET: {"input_per_mtok": "10", "output_per_mtok": "80"},
}


def pico(model: str) -> Price:
    """The price in pico-dollars per token (1 USD per million tokens = 10^6 pico a token)."""
    spec = PRICES[model]
    per_token = {k: int(float(v) * 1_000_000) for k, v in spec.items()}
    return Price(
        input=per_token["input_per_mtok"],
        cached_input=per_token["input_per_mtok"],
        output=per_token["output_per_mtok"],
        reasoning=per_token["output_per_mtok"],
    )


def cost(call: dict[str, Any]) -> int:
    """What the mock's ledger says a call cost, at its own model's price (pico-dollars)."""
    return pico(call["model"]).cost(
        input_tokens=call["input_tokens"],
        output_tokens=call["output_tokens"],
        cached_tokens=0,
        reasoning_tokens=0,
    )


async def _priced(gw: Gateway) -> None:
    for model, price in PRICES.items():
        r = await gw.client.put(f"/admin/models/{model}/price", json=price, headers=ADMIN)
        assert r.status_code == 200, r.text
    await gw.app.state.prices.load()  # what every replica does every GATEWAY_PRICES_REFRESH_S


async def _triage(gw: Gateway, tenant: Tenant, target: dict[str, Any] | None = None) -> None:
    await put_agent(gw, tenant, "billing", {"model": TARGET, **(target or {})})
    await put_agent(gw, tenant, "triage", {"model": ENTRY, "handoffs": ["billing"]})


@streamed
async def test_each_model_is_billed_at_its_own_price(gw: Gateway, stream: bool) -> None:
    await _priced(gw)
    tenant = await gw.create_tenant("acme")
    await _triage(gw, tenant)
    tokens_before = await metric(gw, "gateway_tokens_total", tenant="acme", model=TARGET)
    spend_before = await metric(gw, "gateway_spend_usd_total", tenant="acme", model=TARGET)

    text = f"my invoice is wrong, transfer_to_billing ({stream})"
    before = len(gw.mock_ledger(text))
    outcome = await run(gw, tenant, "triage", text, stream=stream)
    assert outcome.status == 200, outcome.body
    entry_call, target_call = gw.mock_ledger(text)[before:]
    assert (entry_call["model"], target_call["model"]) == (ENTRY, TARGET)

    (record,) = await records(gw, tenant)
    assert record["model"] == ENTRY  # the run's model is the entry agent's
    assert record["cost_usd"] == usd(cost(entry_call) + cost(target_call))
    assert record["unpriced"] is False
    shares = record["model_usage"]
    assert set(shares) == {ENTRY, TARGET}
    for call in (entry_call, target_call):
        share = shares[call["model"]]
        assert share["requests"] == 1
        assert (share["input_tokens"], share["output_tokens"]) == (
            call["input_tokens"],
            call["output_tokens"],
        )
        assert share["cost_usd"] == usd(cost(call))

    # The by-model report puts each share on its model; the run counts under its own model.
    today = utcnow().date().isoformat()
    report = (
        await gw.client.get(
            "/v1/usage",
            params={"group_by": "model", "start": today, "end": today},
            headers=tenant.headers,
        )
    ).json()
    rows = {row["model"]: row for row in report["data"]}
    assert (rows[ENTRY]["runs"], rows[TARGET]["runs"]) == (1, 0)
    assert rows[TARGET]["output_tokens"] == target_call["output_tokens"]
    assert rows[TARGET]["cost_usd"] == usd(cost(target_call))
    assert report["totals"]["cost_usd"] == record["cost_usd"]
    day = date.fromisoformat(today)
    assert await assert_reports_agree(gw.app.state.db, [tenant.id], day, day) >= 1

    # The metrics count the target's tokens and spend under the target's model.
    tokens = await metric(gw, "gateway_tokens_total", tenant="acme", model=TARGET)
    assert tokens - tokens_before == target_call["input_tokens"] + target_call["output_tokens"]
    spend = await metric(gw, "gateway_spend_usd_total", tenant="acme", model=TARGET)
    assert abs((spend - spend_before) - cost(target_call) / 1e12) < 1e-9


async def test_a_spend_limit_reserves_a_targets_call_at_the_targets_price(gw: Gateway) -> None:
    # The entry model is free; the target's next call (20 output tokens at $80 per million,
    # and its input) can cost more than the $0.001 a day left: refused before it is made.
    await _priced(gw)
    r = await gw.client.put(
        f"/admin/models/{ENTRY}/price",
        json={"input_per_mtok": "0", "output_per_mtok": "0"},
        headers=ADMIN,
    )
    assert r.status_code == 200, r.text
    await gw.app.state.prices.load()
    tenant = await gw.create_tenant("thrifty")
    r = await gw.client.patch(
        f"/admin/tenants/{tenant.id}",
        json={"limits": {"spend_per_day_usd": "0.001"}},
        headers=ADMIN,
    )
    assert r.status_code == 200, r.text
    await _triage(gw, tenant, {"model_settings": {"max_tokens": 20}})

    text = "an invoice question, transfer_to_billing please"
    before = len(gw.mock_ledger(text))
    outcome = await run(gw, tenant, "triage", text, stream=False)
    assert outcome.status == 429, outcome.body
    assert outcome.error["code"] == "spend_per_day"
    calls = gw.mock_ledger(text)[before:]
    assert [c["model"] for c in calls] == [ENTRY]  # the dear call was never made

    # A plain answer from the free entry model still runs.
    assert (await run(gw, tenant, "triage", "just say hi", stream=False)).status == 200


async def test_a_run_of_two_unpriced_models_is_one_unpriced_run_in_every_report(
    gw: Gateway,
) -> None:
    # Neither model has a price: the run is on both models' rows of the by-model report, but
    # its totals count it once, as the other groupings do (they said 2 by model, 1 by agent).
    tenant = await gw.create_tenant("acme")
    await _triage(gw, tenant)
    outcome = await run(gw, tenant, "triage", "transfer_to_billing now", stream=False)
    assert outcome.status == 200, outcome.body
    assert outcome.body["usage"]["requests"] == 2, outcome.body  # the entry's and the target's
    await gw.flush_usage()
    today = utcnow().date().isoformat()
    totals = {}
    for group_by in ("model", "agent", "day"):
        report = await gw.client.get(
            "/v1/usage",
            params={"group_by": group_by, "start": today, "end": today},
            headers=tenant.headers,
        )
        totals[group_by] = report.json()["totals"]
    assert {g: (t["runs"], t["unpriced_runs"], t["unpriced"]) for g, t in totals.items()} == {
        g: (1, 1, True) for g in totals
    }
    day = date.fromisoformat(today)
    assert await assert_reports_agree(gw.app.state.db, [tenant.id], day, day) >= 1
