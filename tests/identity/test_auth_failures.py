"""Repeated auth failures from one address get 429 before they reach the database."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import pytest
from sqlalchemy import event

from tenants.api_key.keys import generate_key
from tests.identity.conftest import ADMIN, Gateway, bearer, gateway_for

WINDOW_S = 3600


async def fresh_window(need_s: float = 30) -> None:
    """Failures count in fixed wall-clock windows: a test's sequence that straddled two would
    start counting again (six slow Argon2 logins on a loaded host take seconds). Windows of
    an hour, and a wait for the next one when less than `need_s` is left of this one."""
    left = WINDOW_S - time.time() % WINDOW_S
    if left < need_s:
        await asyncio.sleep(left + 0.05)


@pytest.fixture
async def strict(sqlite_url: str, mock_llm_base_url: str) -> AsyncIterator[Gateway]:
    async for gateway in gateway_for(
        sqlite_url,
        mock_llm_base_url,
        auth_failure_limit=5,
        admin_auth_failure_limit=5,
        auth_failure_window_s=WINDOW_S,
        principal_cache_ttl_s=5,
    ):
        await fresh_window()
        yield gateway


async def test_failures_are_limited_before_the_database(strict: Gateway) -> None:
    tenant = await strict.create_tenant("acme")
    assert (await strict.client.get("/v1/agents", headers=tenant.headers)).status_code == 200
    statements: list[str] = []
    engine = strict.app.state.db.engine.sync_engine

    def count(conn: object, cursor: object, statement: str, *args: object) -> None:
        statements.append(statement)

    event.listen(engine, "before_cursor_execute", count)
    try:
        seen = []
        for _ in range(5):  # unknown but well-formed keys: each is one DB miss
            r = await strict.client.get("/v1/agents", headers=bearer(generate_key()))
            seen.append(r.status_code)
        assert seen == [401] * 5
        misses = len(statements)
        assert misses >= 5
        for headers in (bearer(generate_key()), bearer("gw_bad"), bearer("x.y.z")):
            r = await strict.client.get("/v1/agents", headers=headers)
            assert r.status_code == 429, r.text
            assert r.json()["error"]["code"] == "auth_failures"
            assert int(r.headers["Retry-After"]) >= 1
        assert len(statements) == misses, "a blocked address reached the database"
    finally:
        event.remove(engine, "before_cursor_execute", count)
    # A key already cached still works from that address (it needs no DB look-up).
    assert (await strict.client.get("/v1/agents", headers=tenant.headers)).status_code == 200


async def test_a_blocked_address_keeps_its_valid_keys_once_out_of_the_cache(
    strict: Gateway,
) -> None:
    # One client behind a shared address (NAT) failing must not lock out the valid keys of
    # the others once their principals leave the 2 s cache: a key this replica resolved
    # lately is still looked up (revocation still holds); an unseen one is refused.
    seen = await strict.create_tenant("seen")
    unseen = await strict.create_tenant("unseen")
    assert (await strict.client.get("/v1/agents", headers=seen.headers)).status_code == 200
    for _ in range(5):
        r = await strict.client.get("/v1/agents", headers=bearer(generate_key()))
        assert r.status_code == 401
    assert (
        await strict.client.get("/v1/agents", headers=bearer(generate_key()))
    ).status_code == 429
    strict.app.state.principals.clear()  # as if the cache TTL had passed
    assert (await strict.client.get("/v1/agents", headers=seen.headers)).status_code == 200
    strict.app.state.principals.clear()
    r = await strict.client.get("/v1/agents", headers=unseen.headers)
    assert r.status_code == 429 and r.json()["error"]["code"] == "auth_failures"
    # Revoked, the vouched key is a failure like any other, and passes the block no more.
    r = await strict.client.delete(f"/admin/tenants/{seen.id}/keys/{seen.key_id}", headers=ADMIN)
    assert r.status_code == 204, r.text
    strict.app.state.principals.clear()
    for _ in range(2):
        r = await strict.client.get("/v1/agents", headers=seen.headers)
        assert r.status_code == 429, r.text


async def test_login_failures_are_limited(strict: Gateway) -> None:
    seen = []
    for _ in range(6):
        r = await strict.client.post(
            "/admin/login", data={"username": "nobody", "password": "wrong-password-123"}
        )
        seen.append(r.status_code)
    assert seen == [401] * 5 + [429]


async def test_failures_are_shared_through_redis(
    sqlite_url: str, mock_llm_base_url: str, redis_settings: dict[str, str]
) -> None:
    overrides = {"auth_failure_limit": 4, "auth_failure_window_s": WINDOW_S, **redis_settings}
    async for one in gateway_for(sqlite_url, mock_llm_base_url, **overrides):
        async for two in gateway_for(sqlite_url, mock_llm_base_url, **overrides):
            await fresh_window()
            await _shared_limit(one, two)


async def _shared_limit(one: Gateway, two: Gateway) -> None:
    async def status(gateway: Gateway) -> int:
        r = await gateway.client.get("/v1/agents", headers=bearer(generate_key()))
        return r.status_code

    assert [await status(g) for g in (one, two, one, two)] == [401] * 4
    # The fourth failure (on `two`) reached the shared limit: `two` blocks at once; `one`
    # blocks as soon as its next failure sees the shared count.
    assert await status(two) == 429
    assert [await status(one), await status(one)] == [401, 429]
    assert (await one.client.get("/admin/tenants", headers=ADMIN)).status_code == 200


async def test_wrong_admin_bearers_are_limited_like_logins(strict: Gateway) -> None:
    """Wrong admin bearer tokens count in the failed-authentication limit: past it the client
    gets 429 (even with the right token, until the window ends), before any check."""
    assert (await strict.client.get("/admin/tenants", headers=ADMIN)).status_code == 200
    seen = []
    for i in range(7):
        r = await strict.client.get("/admin/tenants", headers=bearer(f"wrong-admin-token-{i}"))
        seen.append(r.status_code)
    assert seen == [401] * 5 + [429] * 2
    assert r.json()["error"]["code"] == "auth_failures"
    assert int(r.headers["Retry-After"]) >= 1
    assert (await strict.client.get("/admin/tenants", headers=ADMIN)).status_code == 429
    # A missing credential is not a guess: it does not count (but the block still applies).
    r = await strict.client.get("/admin/tenants")
    assert r.status_code == 429


async def test_admin_bearer_and_login_failures_share_one_budget(strict: Gateway) -> None:
    for i in range(3):
        r = await strict.client.get("/admin/tenants", headers=bearer(f"wrong-{i}"))
        assert r.status_code == 401
    for _ in range(2):
        r = await strict.client.post(
            "/admin/login", data={"username": "nobody", "password": "wrong-password-123"}
        )
        assert r.status_code == 401
    r = await strict.client.post(
        "/admin/login", data={"username": "nobody", "password": "wrong-password-123"}
    )
    assert r.status_code == 429


async def test_admin_credentials_have_their_own_smaller_budget() -> None:
    """A password can be guessed, a 190-bit key cannot: admin credentials are blocked after
    GATEWAY_ADMIN_AUTH_FAILURE_LIMIT failures, tenant credentials after
    GATEWAY_AUTH_FAILURE_LIMIT, each address in its own buckets."""
    from gateway.auth.failures import AuthFailureLimiter
    from gateway.core.errors import RateLimitedError
    from tenants.admin.failures import ADMIN_BUCKET

    limiter = AuthFailureLimiter(limit=5, admin_limit=2, window_s=3_600)
    address = "203.0.113.9"

    async def blocked_after(bucket: str) -> int:
        for n in range(1, 10):
            await limiter.failed(bucket)
            try:
                limiter.check(bucket)
            except RateLimitedError:
                return n
        return 0

    assert await blocked_after(ADMIN_BUCKET + address) == 2
    limiter.check(address)  # the tenant bucket of the same address is untouched
    assert await blocked_after(address) == 5
    from gateway.core.config import Settings

    assert Settings.model_fields["auth_failure_limit"].default == 300
    assert Settings.model_fields["admin_auth_failure_limit"].default == 20
