"""(d) and (d'): the gateway with every control on, the point compared with LiteLLM.

`gateway serve --workers 1` on core 0 with API-key auth, Redis request limits and token quotas
(`BENCH_LIMITS`: never refusing; the run's private redis-server on core 1, as (c')), usage
records in a fresh PostgreSQL database (`bench_<hex>`, migrated with `gateway db upgrade`,
dropped at the end), metrics on (the default), `GATEWAY_UPSTREAM_API=chat_completions`, and the
plain agent (instructions only). The request is the OpenAI-compatible one: `POST
/v1/chat/completions` with the agent as `model`, plain (d) and streamed (d') with
`stream_options.include_usage`.
"""

from __future__ import annotations

import asyncio
import json
import secrets
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import asyncpg
from sqlalchemy.engine import make_url

from bench.loadgen import Expect
from bench.payloads import PLAIN_AGENT_NAME, PLAIN_AGENT_SPEC, chat_body
from bench.report import FULL, FULL_SSE, Point
from bench.rig import BENCH_LIMITS, Bench, start_gateway, start_redis

POSTGRES_SERVER = "postgresql+asyncpg://postgres@127.0.0.1:5432/"
FINISHED = Expect((b'"finish_reason":"stop"',))
"""A complete chat completion (the gateway's and LiteLLM's)."""
STREAMED = Expect((b'"finish_reason":"stop"', b'"usage":{'), ends_with=b"data: [DONE]")
"""A complete chat completion stream: the stop chunk, a usage chunk, `data: [DONE]` last."""


def _url(server_url: str, database: str, driver: str = "postgresql+asyncpg") -> str:
    """The URL of `database` on the server of `server_url` (a SQLAlchemy URL)."""
    url = make_url(server_url).set(drivername=driver, database=database)
    return url.render_as_string(hide_password=False)


async def _admin(server_url: str, statement: str) -> None:
    """One statement on the server's `postgres` database (CREATE/DROP DATABASE)."""
    dsn = _url(server_url, "postgres", driver="postgresql")
    connection = await asyncpg.connect(dsn, timeout=10)
    try:
        await connection.execute(statement, timeout=60)
    finally:
        await connection.close(timeout=10)


@contextmanager
def fresh_database(server_url: str) -> Iterator[str]:
    """A new database `bench_<hex>` on the server, its SQLAlchemy URL; dropped on exit."""
    name = f"bench_{secrets.token_hex(4)}"
    asyncio.run(_admin(server_url, f'CREATE DATABASE "{name}"'))
    try:
        yield _url(server_url, name)
    finally:
        try:
            asyncio.run(_admin(server_url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        except Exception as exc:  # report, keep the run's other cleanup going
            print(f"warning: could not drop database {name}: {exc}", flush=True)


def run_full_points(
    bench: Bench,
    mock_port: int,
    redis_url: str,
    postgres_url: str,
    *,
    profile: Callable[[int, str, bytes, dict[str, str]], Point] | None = None,
) -> tuple[list[Point], dict[str, Any]]:
    """(d) plain and (d') streamed at each connection count <= 32, then the usage check;
    `profile(pid, url, body, headers)` records the plain point at 32 connections."""
    print("(d) gateway, all controls (PostgreSQL, Redis limits, chat completions)", flush=True)
    if redis_url == "private":
        redis_url = start_redis(bench)
    with fresh_database(postgres_url) as database_url:
        gateway = start_gateway(
            bench,
            mock_port,
            limits=BENCH_LIMITS,
            redis_url=redis_url,
            database_url=database_url,
            upstream_api="chat_completions",
            agent=(PLAIN_AGENT_NAME, PLAIN_AGENT_SPEC),
        )
        try:
            pid, url, headers = gateway.child.pid, gateway.chat_url, gateway.headers
            plain = json.dumps(chat_body(PLAIN_AGENT_NAME)).encode()
            streamed = json.dumps(chat_body(PLAIN_AGENT_NAME, stream=True)).encode()
            conns = bench.compare_connections
            points = [
                bench.point(FULL, pid, url, plain, headers, c, FINISHED, tree=True) for c in conns
            ]
            points += [
                bench.point(
                    FULL_SSE, pid, url, streamed, headers, c, STREAMED, tree=True, ttfb=c == 1
                )
                for c in conns
            ]
            if profile is not None:
                points.append(profile(pid, url, plain, headers))
            time.sleep(2.0)  # usage is flushed every 0.5 s
            recorded = gateway.recorded_runs()
            expected = sum(p.ok_total for p in points)
            usage = {
                "recorded_runs": recorded,
                "successful_requests": expected,
                "ok": recorded >= expected,
            }
        finally:
            bench.forget(gateway.child)  # before the database is dropped
    return points, usage
