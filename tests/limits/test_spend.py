"""Spend limits: each model call reserves its priced estimate and settles to its real cost, in
the same atomic step as the token quotas, in Redis (shared by replicas) and in memory."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack
from decimal import Decimal
from typing import Any

import httpx
import pytest

from tenants.price.money import micro_to_usd
from tests.gateway.conftest import ADMIN, Gateway, Tenant, gateway_for
from tests.limits.conftest import LIMITED_AGENT
from tests.waiting import eventually

# Input free, output $0.01 a token: a call reserves max_tokens (20) x $0.01 = $0.20 exactly,
# and really costs output_tokens x $0.01.
PRICE = {"input_per_mtok": "0", "output_per_mtok": "10000"}
OUTPUT_MICRO = 10_000
RESERVED = Decimal("0.20")


@pytest.fixture(params=["memory", "redis"])
async def gw(
    request: pytest.FixtureRequest, sqlite_url: str, mock_llm_base_url: str
) -> AsyncIterator[Gateway]:
    extra: dict[str, Any] = {}
    if request.param == "redis":
        # A loaded test machine must not time Redis out into the per-replica fallback.
        extra = {**request.getfixturevalue("redis_settings"), "redis_timeout_ms": 2000}
    async for gateway in gateway_for(
        sqlite_url, mock_llm_base_url, upstream_api="chat_completions", **extra
    ):
        await priced(gateway)
        yield gateway


async def priced(gw: Gateway) -> None:
    r = await gw.client.put("/admin/models/mock-model/price", json=PRICE, headers=ADMIN)
    assert r.status_code == 200, r.text
    await gw.app.state.prices.load()  # what every replica does every GATEWAY_PRICES_REFRESH_S


async def spend_tenant(gw: Gateway, slug: str, **limits: str) -> Tenant:
    tenant = await gw.create_tenant(slug, agent=LIMITED_AGENT)
    r = await gw.client.patch(f"/admin/tenants/{tenant.id}", json={"limits": limits}, headers=ADMIN)
    assert r.status_code == 200, r.text
    stored, sent = r.json()["limits"]["spend_per_day_usd"], limits.get("spend_per_day_usd")
    # The same amount, written one way ("0.50" is stored and shown as "0.5").
    assert (stored is None and sent is None) or Decimal(stored) == Decimal(str(sent))
    return tenant


async def run(client: httpx.AsyncClient, tenant: Tenant, text: str = "hello") -> httpx.Response:
    return await client.post(
        "/v1/agents/assistant/runs", json={"input": text}, headers=tenant.headers
    )


async def three_recorded_runs(gw: Gateway, tenant: Tenant) -> tuple[int, list[int]]:
    """Three runs, recorded: (what they cost in micro-dollars, each one's total tokens)."""
    outputs, tokens = [], []
    for _ in range(3):
        r = await run(gw.client, tenant)
        assert r.status_code == 200, r.text
        outputs.append(r.json()["usage"]["output_tokens"])
        tokens.append(r.json()["usage"]["total_tokens"])
    await gw.flush_usage()
    return sum(outputs) * OUTPUT_MICRO, tokens


async def test_daily_spend_limit_refuses_the_call_that_could_exceed_it(gw: Gateway) -> None:
    tenant = await spend_tenant(gw, "spender", spend_per_day_usd="0.50")
    outputs: list[int] = []
    refused = None
    for _ in range(40):
        r = await run(gw.client, tenant)
        if r.status_code != 200:
            refused = r
            break
        outputs.append(r.json()["usage"]["output_tokens"])
        assert r.headers["x-ratelimit-limit-spend-usd"] == "0.5"
    assert refused is not None and refused.status_code == 429, refused and refused.text
    assert refused.json()["error"]["code"] == "spend_per_day"
    assert int(refused.headers["retry-after"]) >= 1
    assert "x-should-retry" not in refused.headers  # tomorrow it fits
    spent_micro = sum(outputs) * OUTPUT_MICRO
    # Refused only when the next call's reservation could not fit: settled to the real cost.
    assert spent_micro <= 500_000 < spent_micro + 200_000

    limits = (await gw.client.get("/v1/limits", headers=tenant.headers)).json()
    assert limits["limits"]["spend_per_day_usd"] == "0.5"
    window = limits["windows"]["spend_per_day_usd"]
    assert window["limit"] == "0.5" and window["used"] == micro_to_usd(spent_micro)
    assert window["remaining"] == micro_to_usd(500_000 - spent_micro)
    assert limits["windows"]["spend_per_month_usd"] is None

    await gw.flush_usage()
    report = (await gw.client.get("/v1/usage", headers=tenant.headers)).json()
    assert report["totals"]["cost_usd"] == micro_to_usd(spent_micro)  # SQL agrees with Redis


@pytest.mark.parametrize("window", ["spend_per_day", "spend_per_month"])
async def test_a_call_costlier_than_the_whole_budget_says_it_can_never_fit(
    gw: Gateway, window: str
) -> None:
    """A call reserved at $0.20 against a $0.10 budget: waiting for the window cannot help,
    so the client is told (and the OpenAI clients' retry rule reads `x-should-retry`)."""
    tenant = await spend_tenant(gw, f"never-{window[-3:]}", **{f"{window}_usd": "0.10"})
    r = await run(gw.client, tenant)
    assert r.status_code == 429, r.text
    error = r.json()["error"]
    assert error["code"] == window
    assert "can never fit" in error["message"] and "$0.2" in error["message"], error
    assert int(r.headers["retry-after"]) >= 1
    assert r.headers["x-should-retry"] == "false"
    # No run of this tenant ever settled, yet the budget gauge (the quota alerts' divisor)
    # shows its limit: a refusal sets it too.
    metrics = (await gw.client.get("/metrics")).text
    gauge = f"gateway_tenant_{window}_limit_usd" + '{tenant="' + tenant.slug + '"} 0.1'
    assert gauge in metrics, [line for line in metrics.splitlines() if "limit_usd{" in line]


async def test_monthly_spend_limit(gw: Gateway) -> None:
    tenant = await spend_tenant(gw, "monthly", spend_per_month_usd="0.30")
    codes = []
    for _ in range(40):
        r = await run(gw.client, tenant)
        codes.append(r.status_code)
        if r.status_code != 200:
            break
    assert codes[-1] == 429 and r.json()["error"]["code"] == "spend_per_month"
    assert 1 <= int(r.headers["retry-after"]) <= 31 * 86_400
    window = (await gw.client.get("/v1/limits", headers=tenant.headers)).json()["windows"][
        "spend_per_month_usd"
    ]
    assert window["limit"] == "0.3" and Decimal(window["used"]) <= Decimal("0.3")


async def test_an_unpriced_model_is_not_capped_by_spend(gw: Gateway) -> None:
    r = await gw.client.delete("/admin/models/mock-model/price", headers=ADMIN)
    assert r.status_code == 204
    await gw.app.state.prices.load()
    tenant = await spend_tenant(gw, "unpriced", spend_per_day_usd="0.000001")
    for _ in range(3):
        assert (await run(gw.client, tenant)).status_code == 200


async def test_an_exhausted_budget_still_lets_an_unpriced_model_run(gw: Gateway) -> None:
    # A model without a price costs 0: a budget used up (here: lowered below what was
    # spent) refuses the priced agent, never the unpriced one, at admission or at a later
    # model call of the run (the tool run makes two).
    tenant = await spend_tenant(gw, "exhausted", spend_per_day_usd="0.50")
    assert (await run(gw.client, tenant)).status_code == 200
    free = {**LIMITED_AGENT, "model": "mock-model-unpriced"}
    r = await gw.client.put(f"/admin/tenants/{tenant.id}/agents/free", json=free, headers=ADMIN)
    assert r.status_code in (200, 201), r.text
    r = await gw.client.patch(
        f"/admin/tenants/{tenant.id}",
        json={"limits": {"spend_per_day_usd": "0.000001"}},
        headers=ADMIN,
    )
    assert r.status_code == 200, r.text
    refused = await run(gw.client, tenant)
    assert refused.status_code == 429 and refused.json()["error"]["code"] == "spend_per_day"
    for text in ("hello", "Use the calculator on 2+3"):
        r = await gw.client.post(
            "/v1/agents/free/runs", json={"input": text}, headers=tenant.headers
        )
        assert r.status_code == 200, r.text
    assert r.json()["usage"]["requests"] == 2


async def test_a_budget_set_later_holds_what_was_used_before(gw: Gateway) -> None:
    # Windows are counted only while a limit applies: a budget set after three runs must
    # still count them (they are in the usage records), or the tenant could spend it again.
    tenant = await gw.create_tenant("late-budget", agent=LIMITED_AGENT)
    spent, tokens = await three_recorded_runs(gw, tenant)
    limits = {
        # Room for less than one more call's $0.20 reservation.
        "spend_per_day_usd": micro_to_usd(spent + 100_000),
        "spend_per_month_usd": "100",
        "tokens_per_day": 1_000_000,
    }
    r = await gw.client.patch(f"/admin/tenants/{tenant.id}", json={"limits": limits}, headers=ADMIN)
    assert r.status_code == 200, r.text

    windows = (await gw.client.get("/v1/limits", headers=tenant.headers)).json()["windows"]
    assert windows["spend_per_day_usd"]["used"] == micro_to_usd(spent)
    assert windows["spend_per_month_usd"]["used"] == micro_to_usd(spent)
    assert windows["tokens_per_day"]["used"] == sum(tokens)
    refused = await run(gw.client, tenant)
    assert refused.status_code == 429, refused.text
    assert refused.json()["error"]["code"] == "spend_per_day"

    # Setting it again never lowers what the window counted since.
    r = await gw.client.patch(f"/admin/tenants/{tenant.id}", json={"limits": limits}, headers=ADMIN)
    windows = (await gw.client.get("/v1/limits", headers=tenant.headers)).json()["windows"]
    assert windows["spend_per_day_usd"]["used"] == micro_to_usd(spent)


async def test_a_price_change_reaches_the_replicas_limits_at_once(gw: Gateway) -> None:
    # The replica that took the PUT reloads its price table once the change commits (no
    # wait for GATEWAY_PRICES_REFRESH_S): the next run is reserved and settled at the new price.
    tenant = await spend_tenant(gw, "repriced", spend_per_day_usd="10")
    dearer = {"input_per_mtok": "0", "output_per_mtok": "20000"}  # twice PRICE
    r = await gw.client.put("/admin/models/mock-model/price", json=dearer, headers=ADMIN)
    assert r.status_code == 200, r.text
    r = await run(gw.client, tenant)
    assert r.status_code == 200, r.text
    spent = r.json()["usage"]["output_tokens"] * 2 * OUTPUT_MICRO
    windows = (await gw.client.get("/v1/limits", headers=tenant.headers)).json()["windows"]
    assert windows["spend_per_day_usd"]["used"] == micro_to_usd(spent)
    await gw.flush_usage()
    report = (await gw.client.get("/v1/usage", headers=tenant.headers)).json()
    assert report["totals"]["cost_usd"] == micro_to_usd(spent)  # the record agrees


async def test_spend_limits_validate_as_exact_decimals(gw: Gateway) -> None:
    tenant = await gw.create_tenant("validate")
    for bad in ("-1", "0", "0.0000001", "abc", True, "\u0661\u0662", "1\u0660"):
        r = await gw.client.patch(
            f"/admin/tenants/{tenant.id}",
            json={"limits": {"spend_per_day_usd": bad}},
            headers=ADMIN,
        )
        assert r.status_code == 422, (bad, r.text)
    r = await gw.client.patch(
        f"/admin/tenants/{tenant.id}", json={"limits": {"spend_per_month_usd": 12.5}}, headers=ADMIN
    )
    assert r.status_code == 200 and r.json()["limits"]["spend_per_month_usd"] == "12.5"
    # A JSON number is a binary float: it is rounded half-even to whole micro-dollars, as the
    # schema says; a string is exact, so the same digits as a string are refused (above).
    r = await gw.client.patch(
        f"/admin/tenants/{tenant.id}",
        json={"limits": {"spend_per_month_usd": 0.1234565}},
        headers=ADMIN,
    )
    assert r.status_code == 200 and r.json()["limits"]["spend_per_month_usd"] == "0.123456"
    # One way of writing each amount, whatever the client sent, in the admin API and in
    # GET /v1/limits alike.
    for sent, shown in (("1000000000.000000", "1000000000"), (1e9, "1000000000"), ("00025", "25")):
        r = await gw.client.patch(
            f"/admin/tenants/{tenant.id}",
            json={"limits": {"spend_per_month_usd": sent}},
            headers=ADMIN,
        )
        assert r.status_code == 200 and r.json()["limits"]["spend_per_month_usd"] == shown
        limits = (await gw.client.get("/v1/limits", headers=tenant.headers)).json()
        assert limits["windows"]["spend_per_month_usd"]["limit"] == shown, limits
    schema = (await gw.client.get("/openapi.json")).json()["components"]["schemas"]
    rules = schema["TenantLimits"]["properties"]["spend_per_day_usd"]["anyOf"][0]["anyOf"]
    assert {"type": "number", "minimum": 0.000001, "maximum": 10**9} in rules


async def test_concurrent_runs_on_two_replicas_reserve_exactly_what_fits(
    sqlite_url: str, mock_llm_base_url: str, redis_settings: dict[str, str]
) -> None:
    """$0.50 a day, $0.20 reserved per call: of six slow runs at once over two replicas sharing
    Redis, exactly two are admitted to their model call."""
    async with AsyncExitStack() as stack:
        replicas = []
        for _ in range(2):
            gen = gateway_for(
                sqlite_url,
                mock_llm_base_url,
                upstream_api="chat_completions",
                redis_timeout_ms=2000,  # a loaded machine must not fall back to memory
                **redis_settings,
            )
            replicas.append(await stack.enter_async_context(_entered(gen)))
        await priced(replicas[0])
        await replicas[1].app.state.prices.load()
        tenant = await spend_tenant(replicas[0], "shared", spend_per_day_usd="0.50")
        results = await asyncio.gather(
            *(run(replicas[i % 2].client, tenant, "slow [[latency:3000]]") for i in range(6))
        )
        codes = [r.status_code for r in results]
        assert codes.count(200) == 2 and codes.count(429) == 4, codes
        assert {r.json()["error"]["code"] for r in results if r.status_code == 429} == {
            "spend_per_day"
        }
        spent = sum(r.json()["usage"]["output_tokens"] for r in results if r.status_code == 200)
        window = (await replicas[1].client.get("/v1/limits", headers=tenant.headers)).json()[
            "windows"
        ]["spend_per_day_usd"]
        assert window["used"] == micro_to_usd(spent * OUTPUT_MICRO)  # settled, on both


class _entered:
    """An async generator fixture body used as an async context manager."""

    def __init__(self, gen: AsyncIterator[Gateway]) -> None:
        self.gen = gen

    async def __aenter__(self) -> Gateway:
        return await anext(self.gen)  # type: ignore[call-overload, no-any-return]

    async def __aexit__(self, *exc: Any) -> None:
        with pytest.raises(StopAsyncIteration):
            await anext(self.gen)  # type: ignore[call-overload]


async def test_a_plain_answer_counts_its_own_tokens_and_cost_errors_included(
    sqlite_url: str, mock_llm_base_url: str
) -> None:
    """As OpenAI's headers count the request they answer: a plain run's answer shows the
    windows less its own tokens and its own cost, a run cut short by its timeout after a
    model call was answered included (its 504 showed the windows before the run)."""
    async for gw in gateway_for(
        sqlite_url, mock_llm_base_url, upstream_api="chat_completions", run_timeout_s=2.5
    ):
        await priced(gw)
        tenant = await spend_tenant(gw, "own-cost", spend_per_day_usd="5")
        r = await gw.client.patch(
            f"/admin/tenants/{tenant.id}",
            json={"limits": {"tokens_per_day": 100_000}},
            headers=ADMIN,
        )
        assert r.status_code == 200, r.text
        first = await run(gw.client, tenant)
        assert first.status_code == 200, first.text
        tokens = first.json()["usage"]["total_tokens"]
        cost = first.json()["usage"]["output_tokens"] * OUTPUT_MICRO
        assert first.headers["x-ratelimit-remaining-tokens"] == str(100_000 - tokens)
        assert first.headers["x-ratelimit-remaining-spend-usd"] == micro_to_usd(5_000_000 - cost)
        # Two model calls of 1.5 s each (the tool call, then the answer) in a 2.5 s run: the
        # first is answered and spent, the second is cut by the run's timeout.
        cut = await run(gw.client, tenant, "Use the calculator on 40+2, own cost [[latency:1500]]")
        assert cut.status_code == 504 and cut.json()["error"]["code"] == "run_timeout", cut.text
        [call] = [
            c for c in gw.mock_ledger("Use the calculator on 40+2, own cost") if c["tool_call"]
        ]
        tokens += call["total_tokens"]
        cost += call["output_tokens"] * OUTPUT_MICRO
        assert cut.headers["x-ratelimit-remaining-tokens"] == str(100_000 - tokens)
        assert cut.headers["x-ratelimit-remaining-spend-usd"] == micro_to_usd(5_000_000 - cost)
        limits = (await gw.client.get("/v1/limits", headers=tenant.headers)).json()
        assert limits["windows"]["tokens_per_day"]["used"] == tokens


@pytest.mark.parametrize("store", ["memory", "redis"])
async def test_windows_that_lost_their_counts_are_counted_again_from_the_records(
    request: pytest.FixtureRequest, database_url: str, mock_llm_base_url: str, store: str
) -> None:
    # Redis keeps nothing on disk (and a replica without Redis keeps its windows in memory):
    # a restart started the day and month windows from zero, and with them a whole month's
    # spend budget. Each replica now counts the usage records in them again, periodically.
    extra: dict[str, Any] = {"limits_budget_recount_s": 0.2, "upstream_api": "chat_completions"}
    if store == "redis":
        extra = {**extra, **request.getfixturevalue("redis_settings"), "redis_timeout_ms": 2000}
    async for first in gateway_for(database_url, mock_llm_base_url, **extra):
        await priced(first)
        tenant = await first.create_tenant("recounted", agent=LIMITED_AGENT)
        spent, tokens = await three_recorded_runs(first, tenant)
        limits = {
            "spend_per_day_usd": "100",
            # Room for less than one more call's $0.20 reservation this month.
            "spend_per_month_usd": micro_to_usd(spent + 100_000),
            "tokens_per_day": 1_000_000,
        }
        r = await first.client.patch(
            f"/admin/tenants/{tenant.id}", json={"limits": limits}, headers=ADMIN
        )
        assert r.status_code == 200, r.text
    if store == "redis":
        import redis.asyncio as aioredis

        client = aioredis.Redis.from_url(request.getfixturevalue("redis_url"))
        prefix = request.getfixturevalue("redis_prefix")
        async for key in client.scan_iter(match=f"{prefix}*"):
            await client.delete(key)  # a Redis restart: every window gone
        await client.aclose()

    async for second in gateway_for(database_url, mock_llm_base_url, **extra):
        await priced(second)

        async def counted(gw: Gateway = second) -> bool:
            r = await gw.client.get("/v1/limits", headers=tenant.headers)
            return bool(r.json()["windows"]["spend_per_month_usd"]["used"] == micro_to_usd(spent))

        await eventually(counted, timeout=10, what="the month's spend counted again")
        windows = (await second.client.get("/v1/limits", headers=tenant.headers)).json()["windows"]
        assert windows["spend_per_day_usd"]["used"] == micro_to_usd(spent)
        assert windows["tokens_per_day"]["used"] == sum(tokens)
        refused = await run(second.client, tenant)
        assert refused.status_code == 429, refused.text
        assert refused.json()["error"]["code"] == "spend_per_month"
