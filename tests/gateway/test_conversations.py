"""Server-side conversations: storage, history in runs, isolation, the busy lock, deletion."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

import httpx
import orjson
import pytest
from prometheus_client import REGISTRY
from sqlalchemy import func
from sqlmodel import col, select

from gateway.core.config import Settings
from tenants.models import ConversationItem
from tests.conftest import make_settings
from tests.gateway.conftest import ADMIN, AGENT_SPEC, Gateway, gateway_for, read_ledger
from tests.gateway.server import start_gateway_server
from tests.identity.conftest import bearer, claims, enable_jwt, sign
from tests.waiting import eventually

RUN = "/v1/agents/assistant/runs"
FIRST = "My name is Ada and I collect antique clocks from every corner of Europe"


@pytest.fixture
async def cgw(
    database_url: str, mock_llm_base_url: str, upstream_api: str
) -> AsyncIterator[Gateway]:
    """A gateway on each database and each upstream API, no upstream retries."""
    async for gw in gateway_for(
        database_url, mock_llm_base_url, upstream_api=upstream_api, upstream_max_retries=0
    ):
        yield gw


def text_of(item: dict[str, Any]) -> str:
    content = item.get("content")
    if isinstance(content, str):
        return content
    return "".join(part.get("text", "") for part in content or [])


async def new_conversation(gw: Gateway, headers: dict[str, str], **body: Any) -> str:
    r = await gw.client.post("/v1/conversations", json=body or None, headers=headers)
    assert r.status_code == 201, r.text
    conversation_id: str = r.json()["id"]
    return conversation_id


async def items(gw: Gateway, conv: str, headers: dict[str, str]) -> list[dict[str, Any]]:
    r = await gw.client.get(f"/v1/conversations/{conv}/items?limit=100", headers=headers)
    assert r.status_code == 200, r.text
    data: list[dict[str, Any]] = r.json()["data"]
    return data


def sse_events(text: str) -> list[tuple[str, Any]]:
    events = []
    for block in text.split("\n\n"):
        lines = dict(line.split(": ", 1) for line in block.splitlines() if ": " in line)
        if "event" in lines:
            events.append((lines["event"], orjson.loads(lines["data"])))
    return events


async def test_two_turns_carry_the_history(cgw: Gateway) -> None:
    tenant = await cgw.create_tenant("acme")
    h = tenant.headers
    r = await cgw.client.post("/v1/conversations", json={"metadata": {"topic": "x"}}, headers=h)
    assert r.status_code == 201, r.text
    created = r.json()
    conv = created["id"]
    assert conv.startswith("conv_") and created["object"] == "conversation"
    assert created["metadata"] == {"topic": "x"}
    assert (await cgw.client.get(f"/v1/conversations/{conv}", headers=h)).json() == created

    # The same question without history, as a baseline for the model's input size.
    question = "What is my name?"
    r = await cgw.client.post(RUN, json={"input": question}, headers=h)
    assert r.status_code == 200
    baseline = read_ledger(cgw.mock_url, question)[-1]["input_tokens"]

    r = await cgw.client.post(RUN, json={"input": FIRST, "conversation_id": conv}, headers=h)
    assert r.status_code == 200, r.text
    first = r.json()
    assert first["conversation_id"] == conv
    r = await cgw.client.post(
        RUN, json={"input": "What is my name?", "conversation_id": conv}, headers=h
    )
    assert r.status_code == 200, r.text
    assert r.json()["conversation_id"] == conv
    second_call = read_ledger(cgw.mock_url, question)[-1]["input_tokens"]
    stored_chars = len(FIRST) + len(first["output"])
    # The second turn's model call carried the first turn's user and assistant messages.
    assert second_call >= baseline + stored_chars // 4 - 2
    assert r.json()["usage"]["input_tokens"] == second_call

    listed = await items(cgw, conv, h)
    assert [i["role"] for i in listed] == ["user", "assistant", "user", "assistant"]
    assert text_of(listed[0]) == FIRST
    assert text_of(listed[1]) == first["output"]
    assert text_of(listed[2]) == "What is my name?"
    assert text_of(listed[3]) == r.json()["output"]
    page = (await cgw.client.get(f"/v1/conversations/{conv}/items?limit=3", headers=h)).json()
    assert page["has_more"] is True and len(page["data"]) == 3
    rest = (
        await cgw.client.get(
            f"/v1/conversations/{conv}/items?after={page['data'][-1]['id']}", headers=h
        )
    ).json()
    assert rest["has_more"] is False and [text_of(i) for i in rest["data"]] == [r.json()["output"]]
    # Newest first, paged back in time with the same cursor.
    url = f"/v1/conversations/{conv}/items"
    newest = (await cgw.client.get(f"{url}?order=desc&limit=3", headers=h)).json()
    assert newest["has_more"] is True
    assert [i["id"] for i in newest["data"]] == [i["id"] for i in reversed(listed[1:])]
    cursor = newest["data"][-1]["id"]
    older = (await cgw.client.get(f"{url}?order=desc&after={cursor}", headers=h)).json()
    assert older == {"data": [listed[0]], "has_more": False}
    r = await cgw.client.get(f"{url}?order=sideways", headers=h)
    assert r.status_code == 422 and r.json()["error"]["param"] == "order", r.text
    # A cursor past any position the column holds (32 bits on PostgreSQL): an empty page.
    for far in ("item_2147483648", "item_9223372036854775808", "item_" + "9" * 40):
        r = await cgw.client.get(f"/v1/conversations/{conv}/items?after={far}", headers=h)
        assert r.status_code == 200 and r.json() == {"data": [], "has_more": False}, r.text


async def test_streamed_turn_appends_and_failed_turns_append_nothing(cgw: Gateway) -> None:
    tenant = await cgw.create_tenant("acme")
    h = tenant.headers
    conv = await new_conversation(cgw, h)
    r = await cgw.client.post(
        RUN, json={"input": "stream me", "conversation_id": conv, "stream": True}, headers=h
    )
    events = sse_events(r.text)
    assert events[0][0] == "run.created" and events[0][1]["conversation_id"] == conv
    assert events[-1][0] == "run.completed" and events[-1][1]["conversation_id"] == conv
    assert [text_of(i) for i in await items(cgw, conv, h)] == [
        "stream me",
        events[-1][1]["output"],
    ]

    r = await cgw.client.post(
        RUN, json={"input": "boom [[fault:500]]", "conversation_id": conv}, headers=h
    )
    assert r.status_code == 502, r.text
    r = await cgw.client.post(
        RUN,
        json={"input": "boom [[fault:500]]", "conversation_id": conv, "stream": True},
        headers=h,
    )
    assert sse_events(r.text)[-1][0] == "run.failed"
    assert len(await items(cgw, conv, h)) == 2
    # The lock was released after each failure: the next turn runs and appends.
    r = await cgw.client.post(RUN, json={"input": "again", "conversation_id": conv}, headers=h)
    assert r.status_code == 200, r.text
    assert len(await items(cgw, conv, h)) == 4


async def test_tool_calls_are_stored_and_replayed(cgw: Gateway) -> None:
    tenant = await cgw.create_tenant("acme")
    h = tenant.headers
    conv = await new_conversation(cgw, h)
    r = await cgw.client.post(
        RUN, json={"input": "Use the calculator on 6*7", "conversation_id": conv}, headers=h
    )
    assert r.status_code == 200, r.text
    stored = await items(cgw, conv, h)
    types = [i.get("type", "message") for i in stored]
    assert "function_call" in types and "function_call_output" in types
    # The SDK's bookkeeping (a Chat Completions upstream's model and response id) is not shown.
    assert [key for item in stored for key in item if key == "provider_data"] == []
    r = await cgw.client.post(RUN, json={"input": "thanks", "conversation_id": conv}, headers=h)
    assert r.status_code == 200, r.text
    assert len(await items(cgw, conv, h)) == len(stored) + 2


async def test_a_full_conversation_takes_no_further_turn(
    sqlite_url: str, mock_llm_base_url: str
) -> None:
    async for gw in gateway_for(sqlite_url, mock_llm_base_url, conversation_max_items=4):
        tenant = await gw.create_tenant("acme")
        h = tenant.headers
        conv = await new_conversation(gw, h)
        for text in ("one", "two"):
            body = {"input": text, "conversation_id": conv}
            assert (await gw.client.post(RUN, json=body, headers=h)).status_code == 200
        for stream in (False, True):  # the second refusal (not 409) shows the lock was freed
            body = {"input": "three", "conversation_id": conv, "stream": stream}
            r = await gw.client.post(RUN, json=body, headers=h)
            assert r.status_code == 400, r.text
            error = r.json()["error"]
            assert (error["code"], error["param"]) == ("conversation_too_long", "conversation_id")
        assert len(await items(gw, conv, h)) == 4
        other = await new_conversation(gw, h)
        body = {"input": "fresh", "conversation_id": other}
        assert (await gw.client.post(RUN, json=body, headers=h)).status_code == 200
        # A turn whose input alone would take the conversation past the limit is refused too
        # (2 items held, 3 more would make 5 > 4): the limit is never exceeded by input.
        many = [{"role": "user", "content": f"m{i}"} for i in range(3)]
        body = {"input": many, "conversation_id": other}
        r = await gw.client.post(RUN, json=body, headers=h)
        assert r.status_code == 400 and "this turn adds 3" in r.text, r.text
        assert len(await items(gw, other, h)) == 2
        # A turn's answer is stored whole (here a tool call, its output and the answer: 3
        # items past the 3 the input brought), and the refusal then counts every item held.
        third = await new_conversation(gw, h)
        asks = [*many[:2], {"role": "user", "content": "Use the calculator on 6*7"}]
        body = {"input": asks, "conversation_id": third}
        assert (await gw.client.post(RUN, json=body, headers=h)).status_code == 200
        held = len(await items(gw, third, h))
        assert held > 4
        body = {"input": "more", "conversation_id": third}
        r = await gw.client.post(RUN, json=body, headers=h)
        assert r.status_code == 400 and f"it holds {held} items" in r.text, r.text


async def test_a_conversation_cannot_be_deleted_under_a_running_turn(cgw: Gateway) -> None:
    """The turn would answer with (and append to) a conversation that is gone: 409 until the
    turn is over, then the delete works."""
    tenant = await cgw.create_tenant("acme")
    h = tenant.headers
    conv = await new_conversation(cgw, h)
    body = {"input": "slow [[latency:1500]]", "conversation_id": conv}
    turn = asyncio.create_task(cgw.client.post(RUN, json=body, headers=h))
    await asyncio.sleep(0.5)
    r = await cgw.client.delete(f"/v1/conversations/{conv}", headers=h)
    assert r.status_code == 409 and r.json()["error"]["code"] == "conversation_busy", r.text
    done = await turn
    assert done.status_code == 200 and done.json()["conversation_id"] == conv
    assert len(await items(cgw, conv, h)) == 2
    r = await cgw.client.delete(f"/v1/conversations/{conv}", headers=h)
    assert r.status_code == 204
    assert (await cgw.client.get(f"/v1/conversations/{conv}", headers=h)).status_code == 404


async def test_delete_removes_the_conversation_and_its_items(cgw: Gateway) -> None:
    tenant = await cgw.create_tenant("acme")
    h = tenant.headers
    conv = await new_conversation(cgw, h)
    r = await cgw.client.post(RUN, json={"input": "hi", "conversation_id": conv}, headers=h)
    assert r.status_code == 200
    assert len(await items(cgw, conv, h)) == 2
    r = await cgw.client.delete(f"/v1/conversations/{conv}", headers=h)
    assert r.status_code == 204
    for path in (f"/v1/conversations/{conv}", f"/v1/conversations/{conv}/items"):
        r = await cgw.client.get(path, headers=h)
        assert r.status_code == 404 and r.json()["error"]["code"] == "conversation_not_found"
    r = await cgw.client.post(RUN, json={"input": "hi", "conversation_id": conv}, headers=h)
    assert r.status_code == 404
    assert (await cgw.client.delete(f"/v1/conversations/{conv}", headers=h)).status_code == 404
    async with cgw.app.state.db.session() as session:
        statement = select(func.count()).where(col(ConversationItem.conversation_id) == conv)
        assert (await session.exec(statement)).one() == 0


async def test_other_tenants_users_and_scopes_cannot_reach_a_conversation(
    cgw: Gateway,
) -> None:
    a = await cgw.create_tenant("tenant-a")
    b = await cgw.create_tenant("tenant-b")
    conv = await new_conversation(cgw, a.headers)
    r = await cgw.client.post(
        RUN, json={"input": "secret", "conversation_id": conv}, headers=a.headers
    )
    assert r.status_code == 200
    probes: list[tuple[str, str, Any]] = [
        ("GET", f"/v1/conversations/{conv}", None),
        ("GET", f"/v1/conversations/{conv}/items", None),
        ("DELETE", f"/v1/conversations/{conv}", None),
        ("POST", RUN, {"input": "hi", "conversation_id": conv}),
        ("POST", RUN, {"input": "hi", "conversation_id": conv, "stream": True}),
    ]
    for method, path, body in probes:
        r = await cgw.client.request(method, path, json=body, headers=b.headers)
        assert r.status_code == 404, (method, path, r.text)
        assert r.json()["error"]["code"] == "conversation_not_found"
    assert len(await items(cgw, conv, a.headers)) == 2  # untouched

    # End users of tenant A: each sees only their own conversations.
    secret = (await enable_jwt(cgw, a.id, {"mode": "hs256", "issuer": "tenant-a"}))["secret"]
    ada = bearer(sign(claims("tenant-a", sub="ada"), secret, "HS256"))
    bob = bearer(sign(claims("tenant-a", sub="bob"), secret, "HS256"))
    ada_conv = await new_conversation(cgw, ada)
    r = await cgw.client.post(RUN, json={"input": "hi", "conversation_id": ada_conv}, headers=ada)
    assert r.status_code == 200, r.text
    for headers, status in ((bob, 404), (ada, 200), (a.headers, 200)):
        r = await cgw.client.get(f"/v1/conversations/{ada_conv}", headers=headers)
        assert r.status_code == status, r.text
    for conversation in (ada_conv, conv):  # conv: made with the tenant's key, no user
        r = await cgw.client.post(
            RUN, json={"input": "hi", "conversation_id": conversation}, headers=bob
        )
        assert r.status_code == 404, r.text
        r = await cgw.client.get(f"/v1/conversations/{conversation}/items", headers=bob)
        assert r.status_code == 404

    # A key without the `conversations` scope.
    r = await cgw.client.post(
        f"/admin/tenants/{a.id}/keys", json={"name": "runs", "scopes": ["runs"]}, headers=ADMIN
    )
    runs_only = bearer(r.json()["key"])
    for method, path, body in [("POST", "/v1/conversations", {}), *probes]:
        r = await cgw.client.request(method, path, json=body, headers=runs_only)
        assert r.status_code == 403, (method, path, r.text)
        assert r.json()["error"]["type"] == "permission_error"


@pytest.fixture(params=["memory", "redis"])
def lock_settings(request: pytest.FixtureRequest) -> dict[str, str]:
    if request.param == "memory":
        return {}
    settings: dict[str, str] = request.getfixturevalue("redis_settings")
    return settings


@pytest.fixture
async def lock_gw(
    sqlite_url: str, mock_llm_base_url: str, lock_settings: dict[str, str]
) -> AsyncIterator[Gateway]:
    async for gw in gateway_for(
        sqlite_url, mock_llm_base_url, upstream_max_retries=0, **lock_settings
    ):
        yield gw


async def test_concurrent_turns_get_409_and_the_lock_is_released(lock_gw: Gateway) -> None:
    gw = lock_gw
    tenant = await gw.create_tenant("acme")
    h = tenant.headers
    conv = await new_conversation(gw, h)
    other = await new_conversation(gw, h)

    async def turn(text: str, conversation: str = conv) -> httpx.Response:
        body = {"input": text, "conversation_id": conversation}
        return await gw.client.post(RUN, json=body, headers=h)

    slow = asyncio.ensure_future(turn("slow [[latency:600]]"))
    await _until_running("acme", slow)  # it holds the conversation's lock
    results = await asyncio.gather(slow, turn("second"), turn("elsewhere", other))
    statuses = sorted(r.status_code for r in results[:2])
    assert statuses == [200, 409], [r.text for r in results]
    busy = next(r for r in results[:2] if r.status_code == 409).json()["error"]
    assert busy["type"] == "conflict_error" and busy["code"] == "conversation_busy"
    assert busy["param"] == "conversation_id"  # as when a paused run holds it
    assert results[2].status_code == 200  # another conversation is not blocked
    assert len(await items(gw, conv, h)) == 2
    # Released after a success and after an upstream error.
    assert (await turn("third")).status_code == 200
    assert (await turn("boom [[fault:500]]")).status_code == 502
    assert (await turn("fourth")).status_code == 200
    assert len(await items(gw, conv, h)) == 6
    # A streamed turn holds the lock too.
    body = {"input": "slow [[latency:600]]", "conversation_id": conv, "stream": True}
    streamed = asyncio.ensure_future(gw.client.post(RUN, json=body, headers=h))
    await _until_running("acme", streamed)
    assert (await turn("during stream")).status_code == 409
    assert sse_events((await streamed).text)[-1][0] == "run.completed"
    assert (await turn("after stream")).status_code == 200


async def test_a_turn_longer_than_the_lock_ttl_keeps_its_lock(
    sqlite_url: str, mock_llm_base_url: str, lock_settings: dict[str, str]
) -> None:
    """Held locks are renewed every TTL/3: a 2.5 s turn under a 1 s TTL still excludes."""
    async for gw in gateway_for(
        sqlite_url,
        mock_llm_base_url,
        upstream_max_retries=0,
        limits_lease_ttl_s=1.0,
        **lock_settings,
    ):
        tenant = await gw.create_tenant("acme")
        h = tenant.headers
        conv = await new_conversation(gw, h)
        body = {"input": "slow [[latency:2500]]", "conversation_id": conv}
        slow = asyncio.ensure_future(gw.client.post(RUN, json=body, headers=h))
        await _until_running("acme", slow)
        await asyncio.sleep(1.7)  # not synchronisation: the turn must outlive the 1 s TTL
        assert not slow.done()
        during = await gw.client.post(
            RUN, json={"input": "during", "conversation_id": conv}, headers=h
        )
        assert during.status_code == 409, during.text
        assert (await slow).status_code == 200
        after = await gw.client.post(
            RUN, json={"input": "after", "conversation_id": conv}, headers=h
        )
        assert after.status_code == 200, after.text
        assert len(await items(gw, conv, h)) == 4


def _in_flight(tenant: str) -> float:
    return REGISTRY.get_sample_value("gateway_runs_in_flight", {"tenant": tenant}) or 0.0


async def _until_running(tenant: str, work: asyncio.Future[Any]) -> None:
    """Until `work`'s run is in flight (admitted after its turn took the conversation lock)."""
    await eventually(
        lambda: work.done() or _in_flight(tenant) > 0, what=f"a run of {tenant} in flight"
    )
    assert not work.done(), work.result()


def _live_settings(sqlite_url: str, mock_url: str, **overrides: Any) -> Settings:
    return make_settings(
        sqlite_url, openai_base_url=mock_url, upstream_api="chat_completions", **overrides
    )


async def test_lock_released_after_disconnect_and_shared_across_replicas(
    sqlite_url: str, mock_llm_base_url: str, lock_settings: dict[str, str]
) -> None:
    settings = _live_settings(sqlite_url, mock_llm_base_url, **lock_settings)
    one, stop_one = await asyncio.to_thread(start_gateway_server, settings)
    two, stop_two = await asyncio.to_thread(start_gateway_server, settings)
    try:
        async with httpx.AsyncClient(base_url=one, timeout=20) as c:
            tenant_id = (
                await c.post("/admin/tenants", json={"slug": "live", "name": "l"}, headers=ADMIN)
            ).json()["id"]
            key = (
                await c.post(f"/admin/tenants/{tenant_id}/keys", json={"name": "k"}, headers=ADMIN)
            ).json()["key"]
            r = await c.put(
                f"/admin/tenants/{tenant_id}/agents/assistant", json=AGENT_SPEC, headers=ADMIN
            )
            assert r.status_code == 201
            h = bearer(key)
            conv = (await c.post("/v1/conversations", json={}, headers=h)).json()["id"]
            body = {"input": "slow [[latency:1000]]", "conversation_id": conv, "stream": True}
            started = time.monotonic()
            async with c.stream("POST", RUN, json=body, headers=h) as r:
                async for line in r.aiter_lines():
                    if line.startswith("event: run.created"):
                        break
            # The client left: the model call already sent is read to its end (1 s: the
            # upstream bills it), then the lock is freed, not held for a lock TTL.
            while True:
                r = await c.post(RUN, json={"input": "next", "conversation_id": conv}, headers=h)
                if r.status_code != 409:
                    break
                assert time.monotonic() - started < 1 + 2.5, "lock not released after disconnect"
                await asyncio.sleep(0.05)
            assert r.status_code == 200, r.text
            stored = [text_of(i) for i in await _items_live(c, conv, h)]
            assert len(stored) == 2 and stored[0] == "next"  # the cancelled turn left nothing

            # Two replicas: a turn in flight on one makes the other answer 409 (Redis only).
            body = {"input": "slow [[latency:2000]]", "conversation_id": conv}
            first = asyncio.ensure_future(c.post(RUN, json=body, headers=h))
            await _until_running("live", first)
            async with httpx.AsyncClient(base_url=two, timeout=20) as c2:
                r2 = await c2.post(RUN, json={"input": "x", "conversation_id": conv}, headers=h)
            assert (await first).status_code == 200
            assert r2.status_code == (409 if lock_settings else 200), r2.text
    finally:
        await asyncio.to_thread(stop_one)
        await asyncio.to_thread(stop_two)


async def _items_live(c: httpx.AsyncClient, conv: str, h: dict[str, str]) -> list[Any]:
    data: list[Any] = (await c.get(f"/v1/conversations/{conv}/items", headers=h)).json()["data"]
    return data


@pytest.mark.parametrize("fail_open", [False, True])
async def test_lock_with_redis_unreachable_follows_the_failure_mode(fail_open: bool) -> None:
    """Redis refusing connections: `closed` answers 503 `conversation_lock_unavailable` with
    Retry-After; `open` locks in this process's memory (still one turn at a time here)."""
    from redis.asyncio import Redis

    from gateway.conversations.lock import ConversationLocks
    from gateway.core.errors import ConflictError, ServiceUnavailableError
    from gateway.limits.breaker import RedisBreaker

    dead = Redis.from_url("redis://127.0.0.1:1/0", socket_connect_timeout=0.1)
    breaker = RedisBreaker(retry_s=1.0, fail_open=fail_open)
    locks = ConversationLocks(redis=dead, breaker=breaker, prefix="test:", ttl_s=30, timeout_s=0.1)
    try:
        if not fail_open:
            with pytest.raises(ServiceUnavailableError) as refused:
                await locks.acquire("conv_a")
            assert refused.value.code == "conversation_lock_unavailable"
            assert int(refused.value.headers["Retry-After"]) >= 1
            assert breaker.degraded
            return
        held = await locks.acquire("conv_a")
        assert breaker.degraded and not held.in_redis
        with pytest.raises(ConflictError) as busy:
            await locks.acquire("conv_a")
        assert busy.value.code == "conversation_busy"
        other = await locks.acquire("conv_b")  # another conversation is not blocked
        await held.release()
        await other.release()
        again = await locks.acquire("conv_a")  # released: the next turn gets it
        await again.release()
    finally:
        await locks.drain()
        await dead.aclose()


@pytest.mark.parametrize("in_redis", [True, False], ids=["redis", "memory"])
async def test_a_lock_dropped_without_release_still_expires(
    request: pytest.FixtureRequest, in_redis: bool
) -> None:
    """Renewal keeps a held lock (past its TTL) but not one whose turn dropped it unreleased:
    a bug that leaks a turn must not keep its conversation busy for ever."""
    import gc

    from redis.asyncio import Redis

    from gateway.conversations.lock import ConversationLocks
    from gateway.core.errors import ConflictError
    from gateway.limits.breaker import RedisBreaker

    redis = None
    prefix = "test:"
    if in_redis:
        redis = Redis.from_url(request.getfixturevalue("redis_url"))
        prefix = request.getfixturevalue("redis_prefix")
    breaker = RedisBreaker(retry_s=1.0, fail_open=True)
    # A 2 s TTL renewed every 0.67 s: a loaded machine (CI, two cores) may delay a renewal
    # pass by a second without the kept lock lapsing.
    locks = ConversationLocks(redis=redis, breaker=breaker, prefix=prefix, ttl_s=2.0, timeout_s=1)
    locks.start()
    try:
        kept = await locks.acquire("conv_kept")
        assert kept.in_redis is in_redis
        dropped = await locks.acquire("conv_dropped")
        del dropped
        gc.collect()
        await asyncio.sleep(5.0)  # two and a half TTLs: the condition under test is time
        with pytest.raises(ConflictError):
            await locks.acquire("conv_kept")  # renewed
        again = await locks.acquire("conv_dropped")  # expired
        await again.release()
        await kept.release()
        await (await locks.acquire("conv_kept")).release()
    finally:
        await locks.drain()
        if redis is not None:
            await redis.aclose()


async def test_a_release_that_redis_missed_is_tried_again(request: pytest.FixtureRequest) -> None:
    """A release whose Redis call times out (Redis paused or away past the time box, so the
    compare-and-delete never ran) is tried again until it lands: the conversation is free a
    moment later, not a whole TTL later (it stayed busy for two minutes, DELETE refused too,
    after a Redis pause of 1.6 s). The first call is failed here; Redis itself is real."""
    from redis.asyncio import Redis

    from gateway.conversations.lock import ConversationLocks
    from gateway.core.errors import ConflictError
    from gateway.limits.breaker import RedisBreaker

    redis = Redis.from_url(request.getfixturevalue("redis_url"))
    prefix = request.getfixturevalue("redis_prefix")
    breaker = RedisBreaker(retry_s=0.2, fail_open=True)
    locks = ConversationLocks(redis=redis, breaker=breaker, prefix=prefix, ttl_s=60, timeout_s=1)
    real_release = locks._release
    assert real_release is not None
    missed: list[str] = []

    async def release_once_missed(*, keys: list[str], args: list[str]) -> object:
        if not missed:
            missed.append(keys[0])
            raise TimeoutError  # as a release that Redis never ran
        return await real_release(keys=keys, args=args)

    locks._release = release_once_missed  # type: ignore[assignment]
    try:
        held = await locks.acquire("conv_missed")
        started = time.monotonic()
        await held.release()
        assert missed and await redis.exists(held.key) == 1  # still held in Redis
        while await redis.exists(held.key):  # every replica sees it free
            assert time.monotonic() - started < 10, "the lock was never released"
            await asyncio.sleep(0.05)
        await asyncio.sleep(0.3)  # the breaker's retry_s: Redis is used again
        again = await locks.acquire("conv_missed")
        assert again.in_redis
        with pytest.raises(ConflictError):
            await locks.acquire("conv_missed")
        await again.release()
    finally:
        await locks.drain()
        await redis.aclose()


class _Ran:
    """What `Turn.append` reads of a run result: its input list."""

    def __init__(self, items: list[dict[str, str]]) -> None:
        self.items = items

    def to_input_list(self) -> list[dict[str, str]]:
        return self.items


async def test_turns_that_raced_past_a_lapsed_lock_both_keep_their_items(
    database_url: str, mock_llm_base_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two appends that computed the same positions (the lock lapsed): the unique index
    refuses one, which appends again after the other; nothing is lost."""
    async for gw in gateway_for(database_url, mock_llm_base_url):
        await _race_two_appends(gw, monkeypatch)


async def _race_two_appends(gw: Gateway, monkeypatch: pytest.MonkeyPatch) -> None:
    from gateway.conversations.repository import ConversationRepository
    from gateway.conversations.service import Turn

    tenant = await gw.create_tenant("acme")
    conv = await new_conversation(gw, tenant.headers)
    lock = await gw.app.state.conversations.locks.acquire(conv)
    both_read = asyncio.Event()
    reads = 0
    original = ConversationRepository.next_position

    async def racing_next_position(self: ConversationRepository, cid: str) -> int:
        nonlocal reads
        position = await original(self, cid)
        reads += 1
        if reads == 2:
            both_read.set()
        await both_read.wait()  # each has read the same position before either inserts
        return position

    monkeypatch.setattr(ConversationRepository, "next_position", racing_next_position)
    turns = [Turn(conversation_id=conv, history=[], lock=lock, db=gw.app.state.db) for _ in "ab"]
    runs: list[Any] = [
        _Ran([{"role": "user", "content": f"{who} asks"}, {"role": "assistant", "content": who}])
        for who in ("alice", "bob")
    ]
    await asyncio.gather(
        *(turn.append(turn.new_items(run)) for turn, run in zip(turns, runs, strict=True))
    )
    await lock.release()
    stored = [text_of(i) for i in await items(gw, conv, tenant.headers)]
    assert sorted(stored) == sorted(["alice asks", "alice", "bob asks", "bob"])
    assert stored[0].endswith("asks") and stored[2].endswith("asks")  # turn by turn
    assert reads >= 3  # one of them read again after the refused insert
