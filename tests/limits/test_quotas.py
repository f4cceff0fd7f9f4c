"""Token quotas and leases against the real Redis: budgets, mid-run stops, reservation hygiene."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

import httpx
import orjson
import pytest
import redis.asyncio as aioredis

from gateway.limits.redis_store import RedisQuotaStore
from gateway.limits.store import unpack
from tests.conftest import make_settings
from tests.gateway.conftest import Gateway, gateway_for
from tests.gateway.server import start_gateway_server
from tests.limits.conftest import limited_tenant

TOOL_RUN = "Use the calculator on 2+3"  # two model calls: the tool call, then the answer


@pytest.fixture
async def gw(
    sqlite_url: str, mock_llm_base_url: str, redis_settings: dict[str, str]
) -> AsyncIterator[Gateway]:
    # SQL agrees with Redis only while every step lands in Redis: a loaded test machine must not
    # time a step out into the per-replica memory fallback (whose runs Redis never counts).
    # What a timed-out step does is tests/limits/test_redis_retries.py's.
    async for gateway in gateway_for(
        sqlite_url,
        mock_llm_base_url,
        upstream_api="chat_completions",
        redis_timeout_ms=2000,
        **redis_settings,
    ):
        yield gateway


def spy_reservations(gw: Gateway, monkeypatch: pytest.MonkeyPatch) -> list[tuple[int, int]]:
    """(reserved, real) of every model call, as the Redis store saw them."""
    seen: list[tuple[int, int]] = []
    original = RedisQuotaStore.settlement_args

    # Every settlement (folded into the next reservation or the run's release) passes here.
    def settlement_args(self: RedisQuotaStore, settlements: Any) -> list[Any]:
        for settlement in settlements:
            reservation, actual, _ = unpack(settlement)
            seen.append((reservation.amount, actual))
        return original(self, settlements)

    monkeypatch.setattr(RedisQuotaStore, "settlement_args", settlement_args)
    return seen


async def tpd_counter(gw: Gateway, tenant_id: str) -> int:
    quotas = gw.app.state.quotas
    key = quotas.redis.keys(tenant_id)[3] + str(int(time.time()) // 86_400)
    return int(await gw.app.state.redis.get(key) or 0)


async def usage_total(gw: Gateway, headers: dict[str, str]) -> dict[str, Any]:
    await gw.flush_usage()
    r = await gw.client.get("/v1/usage?group_by=day", headers=headers)
    assert r.status_code == 200
    totals: dict[str, Any] = r.json()["totals"]
    return totals


async def test_budget_holds_and_sql_agrees_with_redis(
    gw: Gateway, monkeypatch: pytest.MonkeyPatch
) -> None:
    budget = 1500
    seen = spy_reservations(gw, monkeypatch)
    tenant = await limited_tenant(gw, "acme", tokens_per_day=budget)
    spent, refused = 0, None
    for _ in range(60):
        r = await gw.client.post(
            "/v1/agents/assistant/runs", json={"input": "hello there"}, headers=tenant.headers
        )
        if r.status_code != 200:
            refused = r
            break
        spent += r.json()["usage"]["total_tokens"]
    assert refused is not None and refused.status_code == 429
    assert refused.json()["error"]["code"] == "tokens_per_day"
    assert int(refused.headers["retry-after"]) >= 1
    # Documented bound: overshoot ≤ Σ max(0, real - reserved) over calls; 0 here.
    overshoot_bound = sum(max(0, real - reserved) for reserved, real in seen)
    assert overshoot_bound == 0
    assert spent <= budget + overshoot_bound
    totals = await usage_total(gw, tenant.headers)
    assert totals["total_tokens"] == spent == await tpd_counter(gw, tenant.id)


async def test_concurrent_runs_never_exceed_the_budget(
    gw: Gateway, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen = spy_reservations(gw, monkeypatch)
    tenant = await limited_tenant(gw, "acme", tokens_per_day=700)
    results = await asyncio.gather(
        *(
            gw.client.post(
                "/v1/agents/assistant/runs", json={"input": f"run {i}"}, headers=tenant.headers
            )
            for i in range(12)
        )
    )
    codes = [r.status_code for r in results]
    assert 200 in codes and 429 in codes
    spent = sum(r.json()["usage"]["total_tokens"] for r in results if r.status_code == 200)
    bound = sum(max(0, real - reserved) for reserved, real in seen)
    assert spent <= 700 + bound
    totals = await usage_total(gw, tenant.headers)
    assert totals["total_tokens"] == spent == await tpd_counter(gw, tenant.id)


async def test_a_call_larger_than_the_whole_limit_says_it_can_never_fit(gw: Gateway) -> None:
    tenant = await limited_tenant(gw, "tiny", tokens_per_minute=20)
    r = await gw.client.post(
        "/v1/agents/assistant/runs", json={"input": "hello"}, headers=tenant.headers
    )
    assert r.status_code == 429, r.text
    error = r.json()["error"]
    assert error["code"] == "tokens_per_minute" and "can never fit" in error["message"]
    assert int(r.headers["retry-after"]) >= 1
    # The openai client would otherwise wait out Retry-After twice before giving up.
    assert r.headers["x-should-retry"] == "false"


async def test_a_call_that_only_has_to_wait_may_be_retried(gw: Gateway) -> None:
    tenant = await limited_tenant(gw, "waits", tokens_per_minute=1000)
    seen = []
    for i in range(8):
        r = await gw.client.post(
            "/v1/agents/assistant/runs", json={"input": f"run {i}"}, headers=tenant.headers
        )
        seen.append(r.status_code)
        if r.status_code == 429:
            assert r.json()["error"]["code"] == "tokens_per_minute"
            assert "can never fit" not in r.json()["error"]["message"]
            assert "x-should-retry" not in r.headers
            break
    assert seen[0] == 200 and seen[-1] == 429, seen


@pytest.mark.parametrize("stream", [False, True])
async def test_a_first_call_that_does_not_fit_is_a_429_before_the_run_starts(
    gw: Gateway, stream: bool
) -> None:
    # The window has room, but not for the first call's reservation: a stream gets the same
    # HTTP 429 with Retry-After as a plain run (it was a 200 then `run.failed`), nothing ran
    # and nothing is recorded (as when the window is exhausted), and the slot is free.
    tenant = await limited_tenant(gw, "first-call", tokens_per_minute=20, max_concurrent_runs=1)
    for _ in range(2):
        r = await gw.client.post(
            "/v1/agents/assistant/runs",
            json={"input": "hello", "stream": stream},
            headers=tenant.headers,
        )
        assert r.status_code == 429, r.text
        assert r.json()["error"]["code"] == "tokens_per_minute"
        assert int(r.headers["retry-after"]) >= 1
    await gw.flush_usage()
    r = await gw.client.get("/v1/usage/records", headers=tenant.headers)
    assert r.status_code == 200 and r.text == ""
    r = await gw.client.get("/v1/limits", headers=tenant.headers)
    assert r.json()["windows"]["max_concurrent_runs"]["used"] == 0, r.json()


@pytest.mark.parametrize("stream", [False, True])
async def test_run_stops_before_the_call_that_would_exceed(
    gw: Gateway, monkeypatch: pytest.MonkeyPatch, stream: bool
) -> None:
    seen = spy_reservations(gw, monkeypatch)
    probe = await limited_tenant(gw, "probe", tokens_per_day=10**9)
    r = await gw.client.post(
        "/v1/agents/assistant/runs", json={"input": TOOL_RUN}, headers=probe.headers
    )
    assert r.status_code == 200 and r.json()["usage"]["requests"] == 2
    (reserve1, real1), (reserve2, _) = seen
    budget = real1 + reserve2 - 1  # the first call fits, the second cannot
    assert budget >= reserve1
    tenant = await limited_tenant(gw, "tight", tokens_per_day=budget)
    body = {"input": TOOL_RUN, "stream": stream}
    r = await gw.client.post("/v1/agents/assistant/runs", json=body, headers=tenant.headers)
    if stream:
        assert r.status_code == 200
        events = [line for line in r.text.splitlines() if line.startswith("event: ")]
        assert "event: tool.called" in events
        assert events[-1] == "event: run.failed"
        failed = orjson.loads(r.text.rsplit("data: ", 1)[1])["error"]
        assert failed["code"] == "tokens_per_day" and failed["retry_after"] >= 1
    else:
        assert r.status_code == 429
        assert r.json()["error"]["code"] == "tokens_per_day"
        assert int(r.headers["retry-after"]) >= 1
        # The 429's token headers are the window as the refusal found it (not as admission
        # did): the first call's tokens are used, the second call's reservation did not fit.
        assert r.headers["x-ratelimit-limit-tokens"] == str(budget)
        assert r.headers["x-ratelimit-remaining-tokens"] == str(budget - real1)
    await gw.flush_usage()
    r = await gw.client.get("/v1/usage?group_by=day", headers=tenant.headers)
    assert r.json()["totals"]["total_tokens"] == real1 == await tpd_counter(gw, tenant.id)


async def _open_counts(client: aioredis.Redis, store: RedisQuotaStore, tid: str) -> tuple[int, int]:
    lease, resv, _, _ = store.keys(tid)
    return int(await client.zcard(lease)), int(await client.zcard(resv))


async def test_no_lease_or_reservation_outlives_a_mixed_burst(
    sqlite_url: str, mock_llm_base_url: str, redis_settings: dict[str, str]
) -> None:
    settings = make_settings(
        sqlite_url,
        openai_base_url=mock_llm_base_url,
        upstream_api="chat_completions",
        upstream_timeout_s=0.5,
        upstream_max_retries=0,
        limits_lease_ttl_s=30,
        **redis_settings,
    )
    base_url, stop = await asyncio.to_thread(start_gateway_server, settings)
    try:
        async with httpx.AsyncClient(base_url=base_url, timeout=20) as client:
            gw = Gateway(app=None, client=client, mock_url=mock_llm_base_url)  # type: ignore[arg-type]
            tenant = await limited_tenant(
                gw, "mixed", tokens_per_minute=10**6, tokens_per_day=10**7, max_concurrent_runs=50
            )
            h = tenant.headers

            async def run(text: str) -> int:
                r = await client.post("/v1/agents/assistant/runs", json={"input": text}, headers=h)
                return r.status_code

            async def disconnect() -> None:
                body = {"input": "slow [[latency:3000]]", "stream": True}
                async with client.stream(
                    "POST", "/v1/agents/assistant/runs", json=body, headers=h
                ) as r:
                    async for line in r.aiter_lines():
                        if line.startswith("event: run.created"):
                            return

            results = await asyncio.gather(
                *(run("fine") for _ in range(4)),
                *(run("bad [[fault:500]]") for _ in range(3)),
                *(run("slow [[fault:timeout]]") for _ in range(3)),
                *(run(TOOL_RUN) for _ in range(2)),
                *(disconnect() for _ in range(3)),
            )
            assert sorted(c for c in results if c is not None) == sorted(
                [200] * 4 + [502] * 3 + [504] * 3 + [200] * 2
            )
        client2 = aioredis.Redis.from_url(settings.redis_url or "")
        store = RedisQuotaStore(client2, prefix=settings.redis_key_prefix, lease_ttl_s=30)
        deadline = time.monotonic() + 3
        while (counts := await _open_counts(client2, store, tenant.id)) != (0, 0):
            assert time.monotonic() < deadline, f"leaked (leases, reservations): {counts}"
            await asyncio.sleep(0.05)
        await client2.aclose()
    finally:
        await asyncio.to_thread(stop)


async def test_crashed_replicas_leases_and_reservations_expire(
    redis_url: str, redis_prefix: str
) -> None:
    from gateway.limits.policy import QuotaLimits

    client = aioredis.Redis.from_url(redis_url)
    store = RedisQuotaStore(client, prefix=redis_prefix, lease_ttl_s=0.5)
    limits = QuotaLimits(tokens_per_minute=1000, max_concurrent_runs=1)
    assert (await store.admit("ten_x", "run_1", limits)).code == 0
    assert (await store.reserve("ten_x", "run_1", "r1", 100, limits, True)).code == 0
    # "crash": neither settled nor released; a second run is refused meanwhile
    assert (await store.admit("ten_x", "run_2", limits)).code == 1
    lease, resv, _, _ = store.keys("ten_x")
    deadline = time.monotonic() + 3
    while await client.exists(lease):
        assert time.monotonic() < deadline, "the lease outlived its TTL"
        await asyncio.sleep(0.05)
    # The expired reservation gives back its 100 tokens at the next step (its set outlives
    # it for that), and the set is gone once it holds nothing.
    assert (await store.peek("ten_x")).tpm_used == 0
    assert not await client.exists(resv)
    assert (await store.admit("ten_x", "run_2", limits)).code == 0
    await client.aclose()


async def test_round_trips_per_run(gw: Gateway, monkeypatch: pytest.MonkeyPatch) -> None:
    """k model calls cost k + 1 quota round trips: the first reservation rides on admission
    (its estimate made before the run must match the one made at the call), every settlement
    rides on the next step."""
    calls: list[str] = []
    for name in ("admit", "reserve", "release", "settle"):
        original = getattr(RedisQuotaStore, name)

        def spy(*args: Any, _name: str = name, _original: Any = original, **kw: Any) -> Any:
            calls.append(_name)
            return _original(*args, **kw)

        monkeypatch.setattr(RedisQuotaStore, name, spy)
    tenant = await limited_tenant(gw, "trips", tokens_per_day=10**9, max_concurrent_runs=5)
    for text, expected in (
        ("hello there", ["admit", "release"]),
        (TOOL_RUN, ["admit", "reserve", "release"]),
    ):
        calls.clear()
        for stream in (False, True):
            body = {"input": text, "stream": stream}
            r = await gw.client.post("/v1/agents/assistant/runs", json=body, headers=tenant.headers)
            assert r.status_code == 200 and '"status":"completed"' in r.text
        assert calls == expected * 2


@pytest.mark.parametrize("path", ["/v1/agents/assistant/runs", "/v1/chat/completions"])
async def test_a_plain_answer_counts_its_own_tokens_in_its_headers(gw: Gateway, path: str) -> None:
    """As OpenAI's headers count the request they answer: one run after another on a quiet
    window, each answer's remaining tokens are the limit less every run so far, its own
    included (they showed the window before the run)."""
    tenant = await limited_tenant(gw, f"headers-{path.count('/')}", tokens_per_day=100_000)
    if path.endswith("runs"):
        body: dict[str, Any] = {"input": "hello"}
    else:
        body = {"model": "assistant", "messages": [{"role": "user", "content": "hello"}]}
    spent = 0
    for _ in range(3):
        r = await gw.client.post(path, json=body, headers=tenant.headers)
        assert r.status_code == 200, r.text
        spent += r.json()["usage"]["total_tokens"]
        assert r.headers["x-ratelimit-limit-tokens"] == "100000"
        assert r.headers["x-ratelimit-remaining-tokens"] == str(100_000 - spent)


async def test_a_first_answer_on_a_quiet_minute_says_when_its_tokens_leave(gw: Gateway) -> None:
    """The minute was empty at admission (nothing to reset): once the answer counts its own
    tokens, the reset is when they leave the minute, never `0s` beside a remaining count
    below the limit (a client would take the window for free)."""
    tenant = await limited_tenant(gw, "quiet-minute", tokens_per_minute=100_000)
    r = await gw.client.post(
        "/v1/agents/assistant/runs", json={"input": "hello"}, headers=tenant.headers
    )
    assert r.status_code == 200, r.text
    spent = r.json()["usage"]["total_tokens"]
    assert r.headers["x-ratelimit-remaining-tokens"] == str(100_000 - spent)
    reset = int(r.headers["x-ratelimit-reset-tokens"].removesuffix("s"))
    assert 50 <= reset <= 60, r.headers["x-ratelimit-reset-tokens"]
    limits = await gw.client.get("/v1/limits", headers=tenant.headers)
    window = limits.json()["windows"]["tokens_per_minute"]
    assert window["used"] == spent
    assert abs(window["reset_seconds"] - reset) <= 2
