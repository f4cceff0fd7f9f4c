"""The Redis clients (limits, quotas, leases, cache invalidation across replicas).

Created in the lifespan when `GATEWAY_REDIS_URL` is set: the shared client, whose every call is
time-boxed by the socket timeouts (`GATEWAY_REDIS_TIMEOUT_MS`, default 100 ms), and the quota
service's, whose every call the service time-boxes with `asyncio.timeout` (same bound). Either
way a slow or dead Redis costs a request at most that long and never hangs it.
"""

from __future__ import annotations

import asyncio
from typing import Any

import hiredis
from fastapi import Request
from redis.asyncio import Redis
from redis.asyncio.connection import AbstractConnection
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError, DataError, RedisError

from gateway.core.config import Settings
from gateway.core.state import app_state


def create_redis(settings: Settings, *, caller_timeouts: bool = False) -> Redis | None:
    """A process client, or None in embedded mode (no `GATEWAY_REDIS_URL`).

    With `caller_timeouts`, reads and writes carry no socket timeout of their own: for a caller
    that wraps every call in `asyncio.timeout` (the quota service). redis-py runs each timed
    write in a task of its own (`asyncio.wait_for`), about 10 µs of CPU per command that such a
    caller does not need; the connect timeout stays.
    """
    if not settings.redis_url:
        return None
    timeout = settings.redis_timeout_ms / 1000
    client: Redis = Redis.from_url(
        settings.redis_url,
        socket_timeout=None if caller_timeouts else timeout,
        socket_connect_timeout=timeout,
        retry_on_timeout=False,
        # One immediate retry on a fresh connection when a pooled one turns out dead (after a
        # Redis restart every idle connection is). Timeouts are not retried.
        retry=Retry(NoBackoff(), 1, supported_errors=(ConnectionError,)),
        health_check_interval=0,
        max_connections=settings.redis_max_connections,
        decode_responses=False,
        # No CLIENT SETINFO on connect: two round trips per new connection, which a burst of
        # requests on a cold pool would otherwise pay inside its time box.
        driver_info=None,
    )
    pool = client.connection_pool
    pool.connection_class = hiredis_packing(pool.connection_class)
    return client


class HiredisPacking(AbstractConnection):
    """Packs commands with hiredis (C), as redis-py's synchronous client already does.

    redis-py's asyncio connections pack every command in Python: 7.5 µs for the quota script's
    EVALSHA (17 arguments), against 1.1 µs for `hiredis.pack_command` (and fewer chunks to write).
    `python -m bench.limits_micro`: one run's limit calls 253 -> 233 µs of CPU.
    """

    def pack_command(self, *args: Any) -> list[bytes]:
        first = args[0]
        if isinstance(first, str):
            args = (*first.encode().split(), *args[1:])
        elif b" " in first:
            args = (*first.split(), *args[1:])
        try:
            return [hiredis.pack_command(args)]
        except TypeError as exc:
            raise DataError(str(exc)) from exc


_PACKING: dict[type[AbstractConnection], type[AbstractConnection]] = {}


def hiredis_packing(connection_class: type[AbstractConnection]) -> type[AbstractConnection]:
    """`connection_class` (TCP, TLS or Unix socket, as the URL chose) packing with hiredis."""
    packing = _PACKING.get(connection_class)
    if packing is None:
        name = f"Hiredis{connection_class.__name__}"
        packing = _PACKING[connection_class] = type(name, (HiredisPacking, connection_class), {})
    return packing


async def warm_up(client: Redis, connections: int, scripts: list[str], timeout_s: float) -> None:
    """Open `connections` pooled connections and load `scripts` before serving, so that the
    first burst of requests does not open them all inside its time boxes. Best effort: a Redis
    that is down at start-up is the breaker's business."""
    try:
        async with asyncio.timeout(timeout_s):
            await asyncio.gather(*(client.ping() for _ in range(connections)))
            for script in scripts:
                await client.script_load(script)
    except (RedisError, OSError, TimeoutError):
        pass


async def get_redis(request: Request) -> Redis | None:
    """The process Redis client (None in embedded mode)."""
    return app_state(request).redis
