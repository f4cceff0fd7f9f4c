"""Request limits in one process: 429 with Retry-After and the code, headers, /v1/limits."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
from prometheus_client import REGISTRY

from tests.conftest import make_settings
from tests.gateway.conftest import ADMIN, Gateway, gateway_for
from tests.limits.conftest import limited_tenant


@pytest.fixture(params=["memory", "redis"])
async def gw(
    request: pytest.FixtureRequest, sqlite_url: str, mock_llm_base_url: str
) -> AsyncIterator[Gateway]:
    overrides = {}
    if request.param == "redis":
        overrides = request.getfixturevalue("redis_settings")
    async for gateway in gateway_for(sqlite_url, mock_llm_base_url, **overrides):
        yield gateway


def rejections(slug: str, code: str) -> float:
    value = REGISTRY.get_sample_value(
        "gateway_rate_limit_rejections_total", {"tenant": slug, "code": code}
    )
    return value or 0.0


async def test_limit_admits_exactly_l_then_429_with_headers(gw: Gateway) -> None:
    tenant = await limited_tenant(gw, "acme", requests_per_minute=3)
    before = rejections("acme", "requests_per_minute")
    statuses = []
    for expected_remaining in ("2", "1", "0"):
        r = await gw.client.get("/v1/agents", headers=tenant.headers)
        statuses.append(r.status_code)
        assert r.headers["x-ratelimit-limit-requests"] == "3"
        assert r.headers["x-ratelimit-remaining-requests"] == expected_remaining
        assert r.headers["x-ratelimit-reset-requests"].endswith("s")
    assert statuses == [200, 200, 200]
    r = await gw.client.post(
        "/v1/agents/assistant/runs", json={"input": "hi"}, headers=tenant.headers
    )
    assert r.status_code == 429
    assert r.json()["error"]["type"] == "rate_limit_error"
    assert r.json()["error"]["code"] == "requests_per_minute"
    assert 1 <= int(r.headers["retry-after"]) <= 60
    assert r.headers["x-ratelimit-remaining-requests"] == "0"
    assert rejections("acme", "requests_per_minute") == before + 1


async def test_other_tenant_unaffected_and_unlimited_tenant_free(gw: Gateway) -> None:
    flooded = await limited_tenant(gw, "flood", requests_per_minute=2)
    calm = await limited_tenant(gw, "calm", requests_per_minute=50)
    free = await limited_tenant(gw, "free")
    codes = [
        (await gw.client.get("/v1/agents", headers=flooded.headers)).status_code for _ in range(6)
    ]
    assert codes.count(429) == 4
    for n in range(5):
        r = await gw.client.get("/v1/agents", headers=calm.headers)
        assert r.status_code == 200
        r = await gw.client.get("/v1/agents", headers=free.headers)
        assert r.status_code == 200
        # No limit of its own: the deployment's ceiling, so every /v1 response still carries
        # the request trio (SPEC §6).
        assert r.headers["x-ratelimit-limit-requests"] == "60000"
        assert r.headers["x-ratelimit-remaining-requests"] == str(60000 - n - 1)
        assert "x-ratelimit-reset-requests" in r.headers


async def test_the_ceiling_holds_a_tenant_without_a_request_limit(
    sqlite_url: str, mock_llm_base_url: str
) -> None:
    async for gw in gateway_for(
        sqlite_url, mock_llm_base_url, limits_requests_per_minute_ceiling=3
    ):
        free = await limited_tenant(gw, "free")
        codes = [(await gw.client.get("/v1/agents", headers=free.headers)).status_code]
        codes += [(await gw.client.get("/v1/usage", headers=free.headers)).status_code]
        codes += [(await gw.client.get("/v1/agents", headers=free.headers)).status_code]
        r = await gw.client.get("/v1/agents", headers=free.headers)
        assert codes == [200, 200, 200]
        assert r.status_code == 429 and r.json()["error"]["code"] == "requests_per_minute"
        # Its own limit, however high, replaces the ceiling.
        own = await limited_tenant(gw, "own", requests_per_minute=1000)
        for _ in range(5):
            r = await gw.client.get("/v1/agents", headers=own.headers)
            assert r.status_code == 200 and r.headers["x-ratelimit-limit-requests"] == "1000"
        limits = (await gw.client.get("/v1/limits", headers=own.headers)).json()
        assert limits["limits"]["requests_per_minute"] == 1000


async def test_patch_takes_effect_within_the_cache_ttl(gw: Gateway) -> None:
    tenant = await limited_tenant(gw, "acme", requests_per_minute=100)
    assert (await gw.client.get("/v1/agents", headers=tenant.headers)).status_code == 200
    r = await gw.client.patch(
        f"/admin/tenants/{tenant.id}", json={"limits": {"requests_per_minute": 1}}, headers=ADMIN
    )
    assert r.status_code == 200
    import asyncio

    deadline = asyncio.get_running_loop().time() + 3
    while True:
        r = await gw.client.get("/v1/agents", headers=tenant.headers)
        if r.status_code == 429 or asyncio.get_running_loop().time() > deadline:
            break
        await asyncio.sleep(0.05)
    assert r.status_code == 429
    assert r.headers["x-ratelimit-limit-requests"] == "1"


async def _patch_rpm(gw: Gateway, tenant_id: str, rpm: int) -> None:
    r = await gw.client.patch(
        f"/admin/tenants/{tenant_id}", json={"limits": {"requests_per_minute": rpm}}, headers=ADMIN
    )
    assert r.status_code == 200, r.text


async def test_changing_the_limit_keeps_the_window(gw: Gateway) -> None:
    """A PATCH applies the new limit to the requests already counted this minute: raising it
    from 20 to 8 after 5 requests admits 3 more, not 8 more; lowering it to 3 refuses at once."""
    tenant = await limited_tenant(gw, "acme", requests_per_minute=20)
    admitted = 0
    for _ in range(5):
        r = await gw.client.get("/v1/agents", headers=tenant.headers)
        assert r.status_code == 200
        admitted += 1
    await _patch_rpm(gw, tenant.id, 8)
    seen_new_limit = False
    while True:
        r = await gw.client.get("/v1/agents", headers=tenant.headers)
        if r.status_code == 429:
            break
        admitted += 1
        assert admitted <= 20, "the limit never dropped"
        if r.headers["x-ratelimit-limit-requests"] == "8" and not seen_new_limit:
            seen_new_limit = True
            # counted in the same window: 8 minus everything admitted so far, this one included
            assert r.headers["x-ratelimit-remaining-requests"] == str(8 - admitted)
    assert r.headers["x-ratelimit-limit-requests"] == "8"
    assert admitted == 8

    other = await limited_tenant(gw, "other", requests_per_minute=20)
    for _ in range(5):
        assert (await gw.client.get("/v1/agents", headers=other.headers)).status_code == 200
    await _patch_rpm(gw, other.id, 3)
    r = await gw.client.get("/v1/agents", headers=other.headers)
    assert r.status_code == 429, "5 requests this minute already exceed the new limit of 3"
    assert r.headers["x-ratelimit-limit-requests"] == "3"


async def test_retry_after_a_lowered_limit_waits_for_the_entry_that_frees_a_slot(
    gw: Gateway,
) -> None:
    """Six requests this minute (three, then three more 3 s later) and the limit lowered to 3:
    a slot frees only when the newer three's first leaves the window (about 60 s), not the
    oldest request (about 57 s), which left the window still over the limit."""
    tenant = await limited_tenant(gw, "lowered", requests_per_minute=20)
    for batch in range(2):
        if batch:
            await asyncio.sleep(3)
        for _ in range(3):
            assert (await gw.client.get("/v1/agents", headers=tenant.headers)).status_code == 200
    await _patch_rpm(gw, tenant.id, 3)
    r = await gw.client.get("/v1/agents", headers=tenant.headers)
    assert r.status_code == 429
    assert int(r.headers["retry-after"]) >= 59, r.headers["retry-after"]
    assert r.headers["x-ratelimit-reset-requests"] == f"{r.headers['retry-after']}s"


async def test_request_headers_on_responses_answered_before_the_limit_is_checked(
    gw: Gateway,
) -> None:
    """SPEC 6: every /v1 response carries the -requests trio. An unknown path, a 405, a 413
    and a suspended tenant's 403 are answered before the request is counted: they show the
    window as it is, and count nothing."""
    tenant = await limited_tenant(gw, "everywhere", requests_per_minute=10)
    assert (await gw.client.get("/v1/agents", headers=tenant.headers)).status_code == 200
    limit = gw.app.state.settings.max_body_bytes
    answers = [
        await gw.client.get("/v1/no-such-path", headers=tenant.headers),
        await gw.client.delete("/v1/agents", headers=tenant.headers),
        await gw.client.post(
            "/v1/agents/assistant/runs",
            content=b'{"input": "' + b"a" * limit + b'"}',
            headers={**tenant.headers, "Content-Type": "application/json"},
        ),
    ]
    assert [r.status_code for r in answers] == [404, 405, 413]
    for r in answers:
        assert r.headers["x-ratelimit-limit-requests"] == "10", r.status_code
        assert r.headers["x-ratelimit-remaining-requests"] == "9", r.status_code  # not counted
        assert r.headers["x-ratelimit-reset-requests"].endswith("s")
    r = await gw.client.get("/v1/agents", headers=tenant.headers)
    assert r.headers["x-ratelimit-remaining-requests"] == "8"
    # Without a credential there is no tenant to show.
    assert "x-ratelimit-limit-requests" not in (await gw.client.get("/v1/no-such")).headers
    r = await gw.client.patch(
        f"/admin/tenants/{tenant.id}", json={"status": "suspended"}, headers=ADMIN
    )
    assert r.status_code == 200
    r = await gw.client.get("/v1/agents", headers=tenant.headers)
    assert r.status_code == 403 and r.json()["error"]["code"] == "tenant_suspended"
    assert r.headers["x-ratelimit-limit-requests"] == "10"
    assert r.headers["x-ratelimit-remaining-requests"] == "8"


async def test_limits_endpoint_shows_limits_and_what_is_left(gw: Gateway) -> None:
    tenant = await limited_tenant(
        gw, "acme", requests_per_minute=10, tokens_per_day=100_000, max_concurrent_runs=3
    )
    r = await gw.client.post(
        "/v1/agents/assistant/runs", json={"input": "hello there"}, headers=tenant.headers
    )
    assert r.status_code == 200, r.text
    spent = r.json()["usage"]["total_tokens"]
    assert r.headers["x-ratelimit-limit-tokens"] == "100000"
    r = await gw.client.get("/v1/limits", headers=tenant.headers)
    assert r.status_code == 200
    body = r.json()
    assert body["limits"] == {
        "requests_per_minute": 10,
        "requests_per_minute_per_user": None,
        "tokens_per_minute": None,
        "tokens_per_day": 100_000,
        "max_concurrent_runs": 3,
        "spend_per_day_usd": None,
        "spend_per_month_usd": None,
    }
    windows = body["windows"]
    assert windows["requests_per_minute"]["used"] == 2
    assert windows["requests_per_minute"]["remaining"] == 8
    assert windows["tokens_per_day"]["used"] == spent
    assert windows["tokens_per_day"]["remaining"] == 100_000 - spent
    assert windows["max_concurrent_runs"] == {
        "limit": 3,
        "used": 0,
        "remaining": 3,
        "reset_seconds": 0.0,
    }
    assert windows["tokens_per_minute"] is None
    assert r.headers["x-ratelimit-remaining-requests"] == "8"
    assert r.headers["x-ratelimit-remaining-tokens"] == str(100_000 - spent)


async def test_per_user_key_function(sqlite_url: str) -> None:
    from gateway.auth.principal import Principal
    from gateway.core.errors import RateLimitedError
    from gateway.limits.breaker import RedisBreaker
    from gateway.limits.requests import RequestLimiter, RequestLimitExceeded

    limiter = RequestLimiter(
        make_settings(sqlite_url), RedisBreaker(retry_s=1, fail_open=True), None
    )
    limits = {"requests_per_minute": 100, "requests_per_minute_per_user": 2}
    alice = Principal("ten_1", "acme", "active", None, frozenset(), limits, user="alice")
    bob = Principal("ten_1", "acme", "active", None, frozenset(), limits, user="bob")
    await limiter.check(alice)
    await limiter.check(alice)
    with pytest.raises(RequestLimitExceeded) as exc:
        await limiter.check(alice)
    assert isinstance(exc.value.error, RateLimitedError)
    assert exc.value.error.code == "requests_per_minute_per_user"
    assert len(await limiter.check(bob)) == 2


@pytest.mark.parametrize("store", ["memory", pytest.param("redis", marks=pytest.mark.redis)])
async def test_one_users_refusals_do_not_use_up_the_tenants_window(
    sqlite_url: str, store: str, request: pytest.FixtureRequest
) -> None:
    """Tenant limit 5, per user 1: mallory's four refused requests count nowhere, so four
    other users still get in; then the tenant's window refuses (and the headers of each 429
    show the window that refused)."""
    import redis.asyncio as aioredis

    from gateway.auth.principal import Principal
    from gateway.limits.breaker import RedisBreaker
    from gateway.limits.headers import request_headers
    from gateway.limits.requests import RequestLimiter, RequestLimitExceeded

    client = None
    overrides = {}
    if store == "redis":
        client = aioredis.Redis.from_url(request.getfixturevalue("redis_url"))
        overrides["redis_key_prefix"] = request.getfixturevalue("redis_prefix")
    limiter = RequestLimiter(
        make_settings(sqlite_url, **overrides), RedisBreaker(retry_s=1, fail_open=True), client
    )
    limits = {"requests_per_minute": 5, "requests_per_minute_per_user": 1}

    def user(name: str) -> Principal:
        return Principal("ten_1", "acme", "active", None, frozenset(), limits, user=name)

    try:
        await limiter.check(user("mallory"))
        for _ in range(4):
            with pytest.raises(RequestLimitExceeded) as refused:
                await limiter.check(user("mallory"))
            assert refused.value.error.code == "requests_per_minute_per_user"
            assert request_headers(refused.value.states)["x-ratelimit-limit-requests"] == "1"
        for name in ("bob", "carol", "dave", "erin"):
            await limiter.check(user(name))
        with pytest.raises(RequestLimitExceeded) as refused:
            await limiter.check(user("frank"))
        assert refused.value.error.code == "requests_per_minute"
        headers = request_headers(refused.value.states)
        assert headers["x-ratelimit-limit-requests"] == "5"
        assert headers["x-ratelimit-remaining-requests"] == "0"
        assert int(headers["x-ratelimit-reset-requests"].removesuffix("s")) >= 1
        # ... and frank was not counted in his own window by the tenant's refusal.
        limits["requests_per_minute"] = 6
        await limiter.check(user("frank"))
    finally:
        if client is not None:
            await client.aclose()


async def test_retry_after_waits_for_every_full_window(sqlite_url: str) -> None:
    """Tenant limit 2, per user 1: u1 then (a second later) u2 fill both windows; u2's next
    request is refused by the tenant's window, but obeying a Retry-After of the tenant's wait
    alone would meet u2's own full window: Retry-After covers both."""
    import asyncio

    from gateway.auth.principal import Principal
    from gateway.limits.breaker import RedisBreaker
    from gateway.limits.requests import RequestLimiter, RequestLimitExceeded

    limiter = RequestLimiter(
        make_settings(sqlite_url), RedisBreaker(retry_s=1, fail_open=True), None
    )
    limits = {"requests_per_minute": 2, "requests_per_minute_per_user": 1}

    def user(name: str) -> Principal:
        return Principal("ten_1", "acme", "active", None, frozenset(), limits, user=name)

    await limiter.check(user("u1"))
    await asyncio.sleep(1.1)
    await limiter.check(user("u2"))
    with pytest.raises(RequestLimitExceeded) as refused:
        await limiter.check(user("u2"))
    assert refused.value.error.code == "requests_per_minute"
    by_code = {state.code: state for state in refused.value.states}
    own = by_code["requests_per_minute_per_user"]
    assert own.remaining == 0 and own.reset_s > by_code["requests_per_minute"].reset_s + 1
    assert int(refused.value.error.headers["Retry-After"]) >= own.reset_s


async def test_token_headers_on_every_v1_response_where_a_token_limit_applies(
    gw: Gateway,
) -> None:
    tenant = await limited_tenant(gw, "acme", requests_per_minute=50, tokens_per_day=100_000)
    r = await gw.client.post(
        "/v1/agents/assistant/runs", json={"input": "hello there"}, headers=tenant.headers
    )
    assert r.status_code == 200, r.text
    spent = r.json()["usage"]["total_tokens"]
    responses = {
        "agents": await gw.client.get("/v1/agents", headers=tenant.headers),
        "usage": await gw.client.get("/v1/usage", headers=tenant.headers),
        "unknown agent": await gw.client.post(
            "/v1/agents/nope/runs", json={"input": "hi"}, headers=tenant.headers
        ),
        "bad body": await gw.client.post(
            "/v1/agents/assistant/runs", json={"inputs": "hi"}, headers=tenant.headers
        ),
    }
    assert [r.status_code for r in responses.values()] == [200, 200, 404, 422]
    for what, r in responses.items():
        assert r.headers.get("x-ratelimit-limit-tokens") == "100000", what
        assert r.headers["x-ratelimit-remaining-tokens"] == str(100_000 - spent), what
        assert r.headers["x-ratelimit-reset-tokens"].endswith("s"), what
        assert r.headers["x-ratelimit-limit-requests"] == "50", what

    only_requests = await limited_tenant(gw, "calm", requests_per_minute=50)
    r = await gw.client.get("/v1/agents", headers=only_requests.headers)
    assert r.headers["x-ratelimit-limit-requests"] == "50"
    assert "x-ratelimit-limit-tokens" not in r.headers
    r = await gw.client.get("/v1/agents")  # no credential: no tenant, no limit headers
    assert r.status_code == 401
    assert "x-ratelimit-limit-tokens" not in r.headers
