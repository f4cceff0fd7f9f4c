"""Billing-export memory proof: load N usage rows into a fresh PostgreSQL database with bulk
SQL, start `gateway serve` on it, stream `GET /admin/usage/records` and sample the server's RSS
as the lines arrive. Flat RSS over the whole range is the claim.

    .venv/bin/python -m bench.usage_export --rows 1000000
"""

from __future__ import annotations

import argparse
import asyncio
import os
import secrets
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine

from bench.procs import free_port
from gateway.core.migrate import upgrade

ADMIN_TOKEN = secrets.token_hex(24)
SECRET_KEY = secrets.token_hex(32)
GATEWAY = str(Path(sys.executable).with_name("gateway"))

LOAD = """
INSERT INTO usage_records (run_id, tenant_id, key_id, "user", agent, agent_version, model,
    requests, input_tokens, output_tokens, cached_tokens, reasoning_tokens, total_tokens,
    status, latency_ms, day, created_at)
SELECT 'run_' || lpad(g::text, 12, '0'), 'ten_' || (g % 1000), 'key_' || (g % 5000),
    'user-' || (g % 20000), 'bot', 1, 'gpt-4.1-mini', 1 + g % 3, 100 + g % 900, 20 + g % 300,
    0, 0, 120 + g % 900 + g % 300, 'completed', 50 + g % 2000,
    DATE '2026-11-01' + (g % 30), TIMESTAMPTZ '2026-11-01 00:00+00' + (g % 30) * INTERVAL '1 day'
FROM generate_series(CAST(:first AS integer), CAST(:last AS integer)) AS g
"""


async def admin(url: str, sql: str) -> None:
    engine = create_async_engine(url, isolation_level="AUTOCOMMIT")
    try:
        async with engine.connect() as conn:
            await conn.execute(text(sql))
    finally:
        await engine.dispose()


async def load(url: str, rows: int, chunk: int = 200_000) -> None:
    engine = create_async_engine(url)
    try:
        for first in range(1, rows + 1, chunk):
            async with engine.begin() as conn:
                last = min(rows, first + chunk - 1)
                await conn.execute(text(LOAD), {"first": first, "last": last})
        async with engine.connect() as conn:
            await conn.execute(text("COMMIT"))
            await conn.execute(text("ANALYZE usage_records"))
    finally:
        await engine.dispose()


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def stream(base: str, pid: int, rows: int, accept: str) -> None:
    params = {"start": "2026-11-01", "end": "2026-11-30"}
    headers = {"authorization": f"Bearer {ADMIN_TOKEN}", "accept": accept}
    step = max(rows // 10, 1)
    count, started, samples = 0, time.monotonic(), [rss_mb(pid)]
    print(f"{accept}: RSS before {samples[0]:.0f} MB")
    with httpx.stream(
        "GET", f"{base}/admin/usage/records", params=params, headers=headers, timeout=600
    ) as response:
        response.raise_for_status()
        for _line in response.iter_lines():
            count += 1
            if count % step == 0:
                samples.append(rss_mb(pid))
                print(
                    f"  {count:>9} lines  {time.monotonic() - started:6.1f} s  {samples[-1]:.0f} MB"
                )
    elapsed = time.monotonic() - started
    print(
        f"{accept}: {count} lines in {elapsed:.1f} s ({count / elapsed:,.0f}/s); "
        f"RSS min {min(samples):.0f} MB, max {max(samples):.0f} MB"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--pg", default="postgresql+asyncpg://postgres@127.0.0.1:5432/postgres")
    args = parser.parse_args()
    name = f"gw_bench_{secrets.token_hex(4)}"
    base_url, _, _ = args.pg.rpartition("/")
    url = f"{base_url}/{name}"
    asyncio.run(admin(args.pg, f'CREATE DATABASE "{name}"'))
    proc: subprocess.Popen[bytes] | None = None
    try:
        upgrade(url)
        started = time.monotonic()
        asyncio.run(load(url, args.rows))
        print(f"loaded {args.rows} rows in {time.monotonic() - started:.1f} s")
        port = free_port()
        env = {k: v for k, v in os.environ.items() if not k.startswith(("GATEWAY_", "OPENAI_"))}
        env.update(
            GATEWAY_ENV="test",
            GATEWAY_DATABASE_URL=url,
            GATEWAY_ADMIN_TOKEN=ADMIN_TOKEN,
            GATEWAY_SECRET_KEY=SECRET_KEY,
            OPENAI_API_KEY="bench-upstream-key",
        )
        log = tempfile.NamedTemporaryFile(prefix="gw-export-", suffix=".log", delete=False)  # noqa: SIM115
        command = [GATEWAY, "serve", "--host", "127.0.0.1", "--port", str(port)]
        proc = subprocess.Popen(
            [*command, "--mock-port", str(free_port())], env=env, stdout=log, stderr=log
        )
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(f"{base}/healthz", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                raise SystemExit(f"gateway did not start, see {log.name}")
            time.sleep(0.2)
        stream(base, proc.pid, args.rows, "application/x-ndjson")
        stream(base, proc.pid, args.rows, "text/csv")
    finally:
        if proc is not None:
            proc.terminate()
            proc.wait(timeout=30)
        asyncio.run(admin(args.pg, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


if __name__ == "__main__":
    main()
