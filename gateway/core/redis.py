"""The shared Redis client (limits, quotas, leases, cache invalidation across replicas).

One `redis.asyncio.Redis` per process, created in the lifespan when `GATEWAY_REDIS_URL` is set.
Every call is time-boxed by the socket timeouts (`GATEWAY_REDIS_TIMEOUT_MS`, default 100 ms), so
a slow or dead Redis costs a request at most that long and never hangs it.
"""

from __future__ import annotations

from typing import Any

from fastapi import Request
from redis.asyncio import Redis

from gateway.core.config import Settings


def create_redis(settings: Settings) -> Redis | None:
    """The process client, or None in embedded mode (no `GATEWAY_REDIS_URL`)."""
    if not settings.redis_url:
        return None
    timeout = settings.redis_timeout_ms / 1000
    client: Redis = Redis.from_url(
        settings.redis_url,
        socket_timeout=timeout,
        socket_connect_timeout=timeout,
        retry_on_timeout=False,
        health_check_interval=0,
        max_connections=settings.redis_max_connections,
        decode_responses=False,
    )
    return client


async def get_redis(request: Request) -> Redis | None:
    """The process Redis client (None in embedded mode)."""
    client: Any = request.app.state.redis
    return client  # type: ignore[no-any-return]
