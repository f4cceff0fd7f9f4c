"""Micro-benchmark of the limit and quota calls against a real Redis: CPU µs per call.

    .venv/bin/python -m bench.limits_micro [--redis-url redis://127.0.0.1:6379/0] [-n 3000]

Each operation runs `n` times back to back on one event loop (uvloop when installed), the
same calls the gateway makes per run; CPU is this process's user + system time (not Redis').
Also prints the per-run total with the gateway's call pattern (k = 1 model call).
"""

from __future__ import annotations

import argparse
import asyncio
import secrets
import time
from collections.abc import Awaitable, Callable

from gateway.auth.principal import Principal
from gateway.core.config import Settings
from gateway.core.redis import create_redis
from gateway.limits.breaker import RedisBreaker
from gateway.limits.quotas import QuotaService
from gateway.limits.requests import RequestLimiter

LIMITS = {
    "requests_per_minute": 10_000_000,
    "tokens_per_minute": 10**12,
    "tokens_per_day": 10**12,
    "max_concurrent_runs": 100_000,
}


def principal(tenant: str) -> Principal:
    return Principal(
        tenant_id=tenant,
        tenant_slug="micro",
        tenant_status="active",
        key_id="k",
        scopes=frozenset({"runs"}),
        limits=LIMITS,
    )


async def measure(name: str, n: int, op: Callable[[], Awaitable[object]]) -> float:
    for _ in range(min(200, n)):
        await op()
    cpu, wall = time.process_time(), time.perf_counter()
    for _ in range(n):
        await op()
    cpu_us = (time.process_time() - cpu) / n * 1e6
    wall_us = (time.perf_counter() - wall) / n * 1e6
    print(f"  {name:<34} {cpu_us:7.1f} µs CPU  {wall_us:7.1f} µs wall", flush=True)
    return cpu_us


async def main(url: str, n: int) -> None:
    settings = Settings(redis_url=url, redis_key_prefix=f"micro:{secrets.token_hex(3)}:")
    redis = create_redis(settings, caller_timeouts=True)  # as the app builds the quota client
    assert redis is not None
    breaker = RedisBreaker(retry_s=1.0, fail_open=True)
    quotas = QuotaService(settings, redis, breaker)
    limiter = RequestLimiter(settings, breaker, redis)
    who = principal(f"ten_{secrets.token_hex(4)}")
    print(f"redis {url}, n={n}, parser: {type(redis.connection_pool.connection_class)}")

    async def request_limit() -> None:
        await limiter.check(who)

    async def run_once() -> None:
        await limiter.check(who)
        ticket = await quotas.open(who, "run_" + secrets.token_hex(6), 100, 50)
        await ticket.before_call(100, 50, ticket.price)
        await ticket.after_call(120)
        await ticket.close()

    await measure("redis ping", n, redis.ping)
    await measure("request limit (async Lua)", n, request_limit)
    per_run = await measure("one run, k=1 (all calls)", n, run_once)
    print(f"  => {per_run:.0f} µs CPU of limit/quota calls per run (k = 1)")
    await redis.aclose()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379/0")
    parser.add_argument("-n", type=int, default=3000)
    args = parser.parse_args()
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    asyncio.run(main(args.redis_url, args.n))
