"""The process Redis client (gateway/core/redis.py) against the real Redis: it packs commands
with hiredis, and every kind of argument the gateway sends still round-trips unchanged."""

from __future__ import annotations

import asyncio

import pytest
from redis.asyncio.connection import Connection, SSLConnection, UnixDomainSocketConnection
from redis.exceptions import ConnectionError, DataError

from gateway.core.config import Settings
from gateway.core.redis import HiredisPacking, create_redis
from tests.limits.conftest import RedisServer


async def test_commands_round_trip_through_hiredis_packing(
    redis_url: str, redis_prefix: str
) -> None:
    client = create_redis(Settings(redis_url=redis_url, redis_key_prefix=redis_prefix))
    assert client is not None
    conn_class = client.connection_pool.connection_class
    assert issubclass(conn_class, HiredisPacking) and issubclass(conn_class, Connection)
    key = f"{redis_prefix}packing"
    try:
        values: list[str | bytes | int | float] = ["héllo wörld ✓", b"\x00\xffraw", 42, -7, 2.5]
        for value in values:
            await client.set(key, value)
            expected = value if isinstance(value, bytes) else str(value).encode()
            assert await client.get(key) == expected
        # a multi-word command name is split as redis-py does
        assert await client.execute_command("CLIENT GETNAME") is None
        # a Lua script with keys and mixed arguments (the quota scripts' shape)
        script = client.register_script("return {KEYS[1], ARGV[1], ARGV[2], ARGV[3]}")
        assert await script(keys=[key], args=["a b", 10, 1.5]) == [
            key.encode(),
            b"a b",
            b"10",
            b"1.5",
        ]
        async with client.pipeline(transaction=True) as pipe:
            pipe.set(key, "x").incrby(f"{key}:n", 3).get(key)
            assert await pipe.execute() == [True, 3, b"x"]
        with pytest.raises(DataError):
            await client.set(key, None)  # type: ignore[arg-type]
        assert await client.ping()
    finally:
        await client.delete(key, f"{key}:n")
        await client.aclose()


@pytest.mark.parametrize(
    ("url", "base"),
    [
        ("redis://127.0.0.1:1/0", Connection),
        ("rediss://127.0.0.1:1/0", SSLConnection),
        ("unix:///tmp/none.sock", UnixDomainSocketConnection),
    ],
)
def test_the_url_still_chooses_tcp_tls_or_unix(url: str, base: type) -> None:
    client = create_redis(Settings(redis_url=url))
    assert client is not None
    conn_class = client.connection_pool.connection_class
    assert issubclass(conn_class, base) and issubclass(conn_class, HiredisPacking)


@pytest.mark.parametrize("caller_timeouts", [False, True])
async def test_a_redis_restart_costs_no_failed_call(
    redis_server: RedisServer, caller_timeouts: bool
) -> None:
    """After a restart every pooled connection is dead; each call still succeeds (one retry on
    a fresh connection), so the limits' breaker never sees a failure from a stale connection."""
    client = create_redis(Settings(redis_url=redis_server.url), caller_timeouts=caller_timeouts)
    assert client is not None
    try:
        assert all(await asyncio.gather(*(client.ping() for _ in range(4))))
        assert len(client.connection_pool._available_connections) == 4
        redis_server.stop()
        redis_server.start()
        for _ in range(2):
            async with asyncio.timeout(1):
                assert all(await asyncio.gather(*(client.ping() for _ in range(4))))
        redis_server.stop()
        with pytest.raises(ConnectionError):  # down is still down: one quick retry, then the error
            async with asyncio.timeout(1):
                await client.ping()
    finally:
        await client.aclose()


async def test_the_request_limiter_survives_a_redis_restart(redis_server: RedisServer) -> None:
    """The first check after a restart goes to Redis (one retry on a fresh connection): it
    neither fails nor trips the breaker into memory."""
    from gateway.auth.principal import Principal
    from gateway.limits.breaker import RedisBreaker
    from gateway.limits.requests import RequestLimiter

    settings = Settings(redis_url=redis_server.url)
    client = create_redis(settings, caller_timeouts=True)
    breaker = RedisBreaker(retry_s=5, fail_open=False)  # closed: a failure would raise 503
    limiter = RequestLimiter(settings, breaker, client)
    who = Principal("ten_r", "r", "active", None, frozenset(), {"requests_per_minute": 100})
    try:
        assert (await limiter.check(who))[0].remaining == 99
        redis_server.stop()
        redis_server.start()  # empty: no persistence
        assert (await limiter.check(who))[0].remaining == 99
        assert not breaker.degraded
    finally:
        assert client is not None
        await client.aclose()


async def test_a_lean_script_answers_as_redis_pys_script(redis_url: str, redis_prefix: str) -> None:
    """Same replies and errors as `register_script`, and a flushed script cache is reloaded."""
    from redis.exceptions import ResponseError

    from gateway.core.redis_script import LeanScript

    client = create_redis(Settings(redis_url=redis_url), caller_timeouts=True)
    assert client is not None
    key = f"{redis_prefix}lean"
    text = (
        "if ARGV[1] == 'fail' then return redis.error_reply('clock skew: test') end "
        "redis.call('INCRBY', KEYS[1], ARGV[2]) "
        "return {KEYS[1], ARGV[1], tonumber(redis.call('GET', KEYS[1])), {ARGV[3]}, false}"
    )
    lean, stock = LeanScript(client, text), client.register_script(text)
    try:
        for args in (["a b", 10, 1.5], ["héllo ✓", -3, b"\x00\xff"]):
            await client.delete(key)
            expected = await stock(keys=[key], args=args)
            await client.delete(key)
            assert await lean(keys=[key], args=args) == expected
        for script in (lean, stock):
            with pytest.raises(ResponseError, match="clock skew: test"):
                await script(keys=[key], args=["fail", 0, 0])
        await client.script_flush()
        await client.delete(key)
        assert (await lean(keys=[key], args=["x", 5, "y"]))[1:4] == [b"x", 5, [b"y"]]
        assert lean.sha == stock.sha
    finally:
        await client.delete(key)
        await client.aclose()


async def test_a_lean_script_survives_a_redis_restart(redis_server: RedisServer) -> None:
    """Dead pooled connections and an empty script cache: every call still answers (one retry
    on a fresh connection, then the script loaded again); a Redis that stays down fails fast."""
    from gateway.core.redis_script import LeanScript

    client = create_redis(Settings(redis_url=redis_server.url), caller_timeouts=True)
    assert client is not None
    script = LeanScript(client, "return redis.call('INCR', KEYS[1])")
    try:
        assert await asyncio.gather(*(script(keys=[f"k{i}"]) for i in range(4))) == [1, 1, 1, 1]
        redis_server.stop()
        redis_server.start()
        async with asyncio.timeout(1):
            assert await asyncio.gather(*(script(keys=[f"k{i}"]) for i in range(4))) == [1] * 4
        redis_server.stop()
        with pytest.raises(ConnectionError):
            async with asyncio.timeout(1):
                await script(keys=["k0"])
    finally:
        await client.aclose()


async def test_a_lean_script_cut_short_leaves_no_reply_behind(
    redis_url: str, redis_prefix: str
) -> None:
    """A call timed out while Redis is still running the script (the reply is still to come)
    must not hand that reply to the next call on the pooled connection."""
    from gateway.core.redis_script import LeanScript

    client = create_redis(
        Settings(redis_url=redis_url, redis_max_connections=1), caller_timeouts=True
    )
    assert client is not None
    slow = LeanScript(
        client,
        "local t = redis.call('TIME') local stop = t[1] * 1000000 + t[2] + 30000 "
        "repeat t = redis.call('TIME') until t[1] * 1000000 + t[2] >= stop return 'slow'",
    )
    echo = LeanScript(client, "return ARGV[1]")
    try:
        assert await echo(args=["warm"]) == b"warm"
        with pytest.raises(TimeoutError):
            async with asyncio.timeout(0.005):
                await slow()
        for i in range(3):
            assert await echo(args=[f"next {i}"]) == f"next {i}".encode()
    finally:
        await client.aclose()
