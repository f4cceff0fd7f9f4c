"""Database-outage timings: `gateway serve` on a fresh PostgreSQL database behind the fault
suite's TCP proxy; the proxy is cut or made to swallow packets, then requests that need the
database are timed (sequentially on one keep-alive connection, and as a concurrent burst).

    .venv/bin/python -m bench.db_outage --mode swallow
    .venv/bin/python -m bench.db_outage --mode cut --requests 50

Prints one line per request (seconds, status, error code, Retry-After, or NO ANSWER when the
connection was dropped) and a summary.
"""

from __future__ import annotations

import argparse
import asyncio
import http.client
import json
import os
import secrets
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from urllib.parse import urlsplit

import asyncpg
import httpx

from bench.procs import free_port
from gateway.core.migrate import upgrade
from tests.faults.proxy import FaultProxy

ADMIN_TOKEN = secrets.token_hex(24)
ADMIN = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
GATEWAY = str(Path(sys.executable).with_name("gateway"))


def timed(connection: http.client.HTTPConnection) -> tuple[float, str]:
    started = time.monotonic()
    try:
        connection.request("GET", "/admin/tenants", headers=ADMIN)
        response = connection.getresponse()
        body = json.loads(response.read())
        code = body.get("error", {}).get("code", "") if response.status >= 400 else ""
        outcome = f"{response.status} {code} retry-after={response.getheader('retry-after')}"
    except (OSError, http.client.HTTPException) as error:
        outcome = f"NO ANSWER ({type(error).__name__})"
        connection.close()
    return time.monotonic() - started, outcome


def burst(port: int, count: int) -> list[tuple[float, str]]:
    def one(_: int) -> tuple[float, str]:
        return timed(http.client.HTTPConnection("127.0.0.1", port, timeout=120))

    with ThreadPoolExecutor(max_workers=count) as pool:
        return list(pool.map(one, range(count)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--mode", choices=["cut", "swallow"], default="swallow")
    parser.add_argument("--requests", type=int, default=10)
    parser.add_argument("--burst", type=int, default=10)
    parser.add_argument("--log", help="Write the gateway's log here.")
    parser.add_argument(
        "--database", default="postgresql+asyncpg://postgres@127.0.0.1:5432/postgres"
    )
    args = parser.parse_args()

    name = f"gw_bench_outage_{secrets.token_hex(3)}"
    admin_dsn = args.database.replace("postgresql+asyncpg://", "postgresql://")
    asyncio.run(_execute(admin_dsn, f'CREATE DATABASE "{name}"'))
    url = args.database.rsplit("/", 1)[0] + f"/{name}"
    upgrade(url)
    parts = urlsplit(url)
    port = free_port()
    with FaultProxy(parts.hostname or "127.0.0.1", parts.port or 5432) as proxy:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("GATEWAY_", "OPENAI_"))}
        env.update(
            GATEWAY_ENV="test",
            GATEWAY_DATABASE_URL=proxy.rewrite(url),
            GATEWAY_ADMIN_TOKEN=ADMIN_TOKEN,
            GATEWAY_SECRET_KEY=secrets.token_hex(32),
            GATEWAY_USAGE_SPILL_PATH="",
            OPENAI_API_KEY="bench",
        )
        with open(args.log, "wb") if args.log else tempfile.TemporaryFile() as log:
            server = subprocess.Popen(
                [GATEWAY, "serve", "--port", str(port)], env=env, stdout=log, stderr=log
            )
            try:
                _wait(f"http://127.0.0.1:{port}/healthz")
                connection = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
                print("database up:", timed(connection))
                getattr(proxy, args.mode)()
                print(f"database {args.mode}:")
                sequential = [timed(connection) for _ in range(args.requests)]
                for seconds, outcome in sequential:
                    print(f"  {seconds:6.2f} s  {outcome}")
                print(f"burst of {args.burst} concurrent requests (fresh connections):")
                concurrent = burst(port, args.burst)
                for seconds, outcome in sorted(concurrent):
                    print(f"  {seconds:6.2f} s  {outcome}")
                every = sequential + concurrent
                dropped = sum("NO ANSWER" in outcome for _, outcome in every)
                print(
                    f"summary: {len(every)} requests, max {max(s for s, _ in every):.2f} s, "
                    f"median {sorted(s for s, _ in every)[len(every) // 2]:.2f} s, "
                    f"{dropped} without an answer"
                )
                proxy.forward()
            finally:
                server.terminate()
                server.wait(timeout=30)
    asyncio.run(_execute(admin_dsn, f'DROP DATABASE "{name}" WITH (FORCE)'))


async def _execute(dsn: str, sql: str) -> None:
    connection = await asyncpg.connect(dsn, timeout=5)
    try:
        await connection.execute(sql)
    finally:
        await connection.close()


def _wait(url: str) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            if httpx.get(url, timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise SystemExit(f"{url} never answered")


if __name__ == "__main__":
    main()
