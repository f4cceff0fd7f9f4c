"""Usage at scale: load N million usage rows into a fresh PostgreSQL database (bulk SQL, the
same schema the migrations build: monthly partitions, rollups), then time every usage report
and the export through a real `gateway serve`, the same reports computed from the raw rows
(what every report cost before the rollups), and the writer's insert rate with and without
the rollup upsert.

    .venv/bin/python -m bench.usage_scale --big-runs 10000000 --other-runs 2000000

One tenant (`ten_0`, slug `big`) gets `--big-runs` runs over the last 30 days; 999 others share
`--other-runs`. The big tenant has 1,000 end users, 10 keys, 5 agents and 3 models.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import secrets
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy import text
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.ext.asyncio import create_async_engine

from bench.procs import free_port
from gateway.core.db import Database
from gateway.core.migrate import upgrade
from tenants.models import UsageRecord
from tenants.usage.partitions import ensure_months, month_start
from tenants.usage.repository import UsageRepository

ADMIN_TOKEN = secrets.token_hex(24)
SECRET_KEY = secrets.token_hex(32)
GATEWAY = str(Path(sys.executable).with_name("gateway"))
TENANTS = 1000

TENANT_ROWS = """
INSERT INTO tenants (id, slug, name, status, limits, created_at)
SELECT 'ten_' || g, CASE WHEN g = 0 THEN 'big' ELSE 'tenant-' || g END, 'Tenant ' || g,
    'active', '{}', now()
FROM generate_series(0, :n - 1) AS g
"""

# $0.40 / $1.60 per million tokens: cost_pico = input x 400000 + output x 1600000.
RAW_ROWS = """
INSERT INTO usage_records (run_id, tenant_id, key_id, "user", agent, agent_version, model,
    requests, input_tokens, output_tokens, cached_tokens, reasoning_tokens, total_tokens,
    status, latency_ms, cost_pico, unpriced, day, created_at)
SELECT 'run_' || :tag || lpad(g::text, 12, '0'), {tenant}, {key}, {user},
    'agent-' || (g % 5), 1, (ARRAY['gpt-4.1-mini', 'gpt-4.1', 'o4-mini'])[1 + g % 3],
    1 + g % 3, 100 + g % 900, 20 + g % 300, 0, 0, 120 + g % 900 + g % 300,
    CASE WHEN g % 50 = 0 THEN 'failed' ELSE 'completed' END, 50 + g % 2000,
    (100 + g % 900) * 400000::bigint + (20 + g % 300) * 1600000::bigint, false,
    CAST(:first_day AS date) + CAST(g % 30 AS integer),
    CAST(:first_day AS timestamptz) + (g % 30) * INTERVAL '1 day' + (g % 86400) * INTERVAL '1 s'
FROM generate_series(CAST(:lo AS integer), CAST(:hi AS integer)) AS g
"""
BIG = {"tenant": "'ten_0'", "key": "'key_big_' || (g % 10)", "user": "'user-' || (g % 1000)"}
OTHERS = {
    "tenant": "'ten_' || (1 + g % 999)",
    "key": "'key_' || (g % 5000)",
    "user": "'user-' || (g % 20000)",
}

ROLLUP = """
INSERT INTO usage_rollups (tenant_id, dimension, day, value, runs, requests, input_tokens,
    output_tokens, cached_tokens, reasoning_tokens, total_tokens, cost_pico, unpriced_runs)
SELECT tenant_id, '{dimension}', day, {value}, count(*), sum(requests), sum(input_tokens),
    sum(output_tokens), sum(cached_tokens), sum(reasoning_tokens), sum(total_tokens),
    sum(cost_pico), sum(CASE WHEN unpriced THEN 1 ELSE 0 END)
FROM usage_records GROUP BY tenant_id, day{group}
"""
DIMENSIONS = {
    "day": "''",
    "agent": "agent",
    "model": "model",
    "key": "coalesce(key_id, '')",
    "user": "coalesce(\"user\", '')",
}


async def admin_sql(url: str, sql: str) -> None:
    engine = create_async_engine(url, isolation_level="AUTOCOMMIT")
    try:
        async with engine.connect() as conn:
            await conn.execute(text(sql))
    finally:
        await engine.dispose()


async def load(url: str, big: int, others: int, first_day: date, chunk: int = 500_000) -> None:
    db = Database(url)
    async with db.unit() as session:
        months = {first_day, first_day + timedelta(days=29)}
        await ensure_months(session, {month_start(m) for m in months})
    await db.dispose()
    engine = create_async_engine(url)
    try:
        async with engine.begin() as conn:
            await conn.execute(text(TENANT_ROWS), {"n": TENANTS})
        for tag, count, shape in (("b", big, BIG), ("o", others, OTHERS)):
            sql = text(RAW_ROWS.format(**shape))
            for lo in range(1, count + 1, chunk):
                hi = min(count, lo + chunk - 1)
                started = time.monotonic()
                async with engine.begin() as conn:
                    await conn.execute(
                        sql, {"tag": tag, "lo": lo, "hi": hi, "first_day": first_day}
                    )
                print(f"  {tag} rows {hi:>11,}  ({chunk / (time.monotonic() - started):,.0f}/s)")
        started = time.monotonic()
        async with engine.begin() as conn:
            for dimension, value in DIMENSIONS.items():
                group = "" if dimension == "day" else f", {value}"
                await conn.execute(
                    text(ROLLUP.format(dimension=dimension, value=value, group=group))
                )
        print(f"  rollups built in {time.monotonic() - started:.1f} s")
        async with engine.connect() as conn:
            await conn.execute(text("COMMIT"))
            await conn.execute(text("VACUUM ANALYZE usage_records"))
            await conn.execute(text("VACUUM ANALYZE usage_rollups"))
            sizes = await conn.execute(
                text(
                    "SELECT pg_size_pretty(pg_total_relation_size(c.oid)), c.relname "
                    "FROM pg_class c WHERE c.relname IN ('usage_rollups') "
                    "OR c.relname LIKE 'usage_records_2%'"
                )
            )
            for size, name in sizes.all():
                print(f"  {name}: {size}")
            count = (await conn.execute(text("SELECT count(*) FROM usage_rollups"))).scalar()
            print(f"  usage_rollups rows: {count:,}")
    finally:
        await engine.dispose()


def percentile(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def time_http(client: httpx.Client, path: str, params: dict[str, str], n: int) -> dict[str, Any]:
    for _ in range(3):
        client.get(path, params=params).raise_for_status()
    samples = []
    body: Any = None
    for _ in range(n):
        started = time.perf_counter()
        r = client.get(path, params=params)
        samples.append((time.perf_counter() - started) * 1000)
        r.raise_for_status()
        body = r.json()
    return {
        "p50": statistics.median(samples),
        "p95": percentile(samples, 0.95),
        "rows": len(body["data"]),
        "runs": body["totals"]["runs"],
    }


async def time_raw(url: str, tenant_id: str | None, group_by: str, start: date, end: date) -> float:
    db = Database(url)
    try:
        async with db.session() as session:
            started = time.perf_counter()
            await UsageRepository(session).raw_report(
                tenant_id=tenant_id, group_by=group_by, start=start, end=end
            )
            return (time.perf_counter() - started) * 1000
    finally:
        await db.dispose()


def _records(n: int, tag: str) -> list[UsageRecord]:
    now = datetime.now(UTC)
    return [
        UsageRecord.model_construct(
            run_id=f"run_w{tag}{i:012d}",
            tenant_id=f"ten_{i % 50}",
            key_id=f"key_{i % 200}",
            user=f"user-{i % 2000}",
            agent=f"agent-{i % 5}",
            agent_version=1,
            model=("gpt-4.1-mini", "gpt-4.1", "o4-mini")[i % 3],
            requests=1,
            input_tokens=100 + i % 900,
            output_tokens=20 + i % 300,
            cached_tokens=0,
            reasoning_tokens=0,
            total_tokens=120 + i % 1200,
            status="completed",
            latency_ms=100,
            day=now.date(),
            created_at=now,
        )
        for i in range(n)
    ]


async def writer_rate(url: str, n: int, batch: int, with_rollups: bool, tag: str) -> float:
    """Runs per second one writer stores, in batches of `batch`: the writer's statement(s)
    (raw insert + rollup upsert), or the raw insert alone (the writer before rollups)."""
    db = Database(url)
    records = _records(n, tag)
    try:
        started = time.perf_counter()
        for i in range(0, n, batch):
            chunk = records[i : i + batch]
            async with db.unit() as session:
                if with_rollups:
                    await UsageRepository(session).add_many(chunk)
                else:
                    rows = [r.model_dump() for r in chunk]
                    statement = pg_insert(UsageRecord).on_conflict_do_nothing(
                        index_elements=["run_id", "segment", "day"]
                    )
                    await session.exec(statement, params=rows)  # type: ignore[call-overload]
        return n / (time.perf_counter() - started)
    finally:
        await db.dispose()


def serve(url: str) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("GATEWAY_", "OPENAI_"))}
    env.update(
        GATEWAY_ENV="test",
        GATEWAY_DATABASE_URL=url,
        GATEWAY_ADMIN_TOKEN=ADMIN_TOKEN,
        GATEWAY_SECRET_KEY=SECRET_KEY,
        OPENAI_API_KEY="bench-upstream-key",
    )
    log = tempfile.NamedTemporaryFile(prefix="gw-scale-", suffix=".log", delete=False)  # noqa: SIM115
    command = [GATEWAY, "serve", "--host", "127.0.0.1", "--port", str(port)]
    proc = subprocess.Popen(
        [*command, "--mock-port", str(free_port())], env=env, stdout=log, stderr=log
    )
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while True:
        try:
            if httpx.get(f"{base}/healthz", timeout=2).status_code == 200:
                return proc, base
        except httpx.HTTPError:
            pass
        if proc.poll() is not None or time.monotonic() > deadline:
            raise SystemExit(f"gateway did not start, see {log.name}")
        time.sleep(0.2)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--big-runs", type=int, default=10_000_000)
    parser.add_argument("--other-runs", type=int, default=2_000_000)
    parser.add_argument("--samples", type=int, default=40)
    parser.add_argument("--raw-samples", type=int, default=3)
    parser.add_argument("--writer-runs", type=int, default=20_000)
    parser.add_argument("--pg", default="postgresql+asyncpg://postgres@127.0.0.1:5432/postgres")
    parser.add_argument("--keep", action="store_true", help="keep the database afterwards")
    parser.add_argument(
        "--database", help="reuse this database, loaded by an earlier run with --keep"
    )
    args = parser.parse_args()
    name = args.database or f"gw_scale_{secrets.token_hex(4)}"
    base_url, _, _ = args.pg.rpartition("/")
    url = f"{base_url}/{name}"
    if not args.database:
        asyncio.run(admin_sql(args.pg, f'CREATE DATABASE "{name}"'))
    print(f"database {name}; load average {os.getloadavg()}")
    proc = None
    end = datetime.now(UTC).date() - timedelta(days=1)
    start = end - timedelta(days=29)
    try:
        upgrade(url)
        started = time.monotonic()
        if not args.database:
            asyncio.run(load(url, args.big_runs, args.other_runs, start))
        print(
            f"loaded {args.big_runs + args.other_runs:,} rows in {time.monotonic() - started:.0f} s"
        )
        proc, base = serve(url)
        params = {"start": start.isoformat(), "end": end.isoformat()}
        headers = {"authorization": f"Bearer {ADMIN_TOKEN}"}
        lines = [
            "| report (30 days) | rows | runs | p50 ms | p95 ms | from raw rows ms |",
            "|---|---|---|---|---|---|",
        ]
        with httpx.Client(base_url=base, headers=headers, timeout=120) as client:
            cases = [
                ("/admin/tenants/ten_0/usage", "ten_0", g)
                for g in ("day", "agent", "model", "key", "user")
            ]
            cases += [("/admin/usage", None, g) for g in ("tenant", "day", "model", "agent")]
            cases.append(("/admin/tenants/ten_7/usage", "ten_7", "day"))
            for path, tenant, group_by in cases:
                t = time_http(client, path, {**params, "group_by": group_by}, args.samples)
                raw = [
                    asyncio.run(time_raw(url, tenant, group_by, start, end))
                    for _ in range(args.raw_samples)
                ]
                who = (
                    "all tenants"
                    if tenant is None
                    else ("big tenant" if tenant == "ten_0" else "a small tenant")
                )
                lines.append(
                    f"| {who} by {group_by} | {t['rows']:,} | {t['runs']:,} | {t['p50']:.1f} | "
                    f"{t['p95']:.1f} | {statistics.median(raw):,.0f} |"
                )
                print(lines[-1], flush=True)
            export_started = time.monotonic()
            count = 0
            with client.stream(
                "GET", "/admin/usage/records", params={**params, "tenant_id": "ten_7"}
            ) as response:
                for _ in response.iter_lines():
                    count += 1
            elapsed = time.monotonic() - export_started
            lines.append(
                f"\nexport of a small tenant's 30 days: {count:,} records in {elapsed:.2f} s"
            )
            count, export_started = 0, time.monotonic()
            with client.stream(
                "GET", "/admin/usage/records", params={**params, "tenant_id": "ten_0"}
            ) as response:
                for _ in response.iter_lines():
                    count += 1
                    if count >= 200_000:
                        break
            elapsed = time.monotonic() - export_started
            lines.append(
                f"export of the big tenant: first {count:,} records in {elapsed:.1f} s "
                f"({count / elapsed:,.0f} records/s)"
            )
        print(f"load average {os.getloadavg()}")
        for i, with_rollups in enumerate((False, True, False, True)):
            rate = asyncio.run(writer_rate(url, args.writer_runs, 200, with_rollups, str(i)))
            label = "raw insert + rollup upsert" if with_rollups else "raw insert only"
            lines.append(f"writer, batches of 200, {label}: {rate:,.0f} runs/s")
            print(lines[-1], flush=True)
        print(f"load average {os.getloadavg()}")
        print("\n".join(lines))
    finally:
        if proc is not None:
            proc.terminate()
            proc.wait(timeout=30)
        if not args.keep and not args.database:
            asyncio.run(admin_sql(args.pg, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


if __name__ == "__main__":
    main()
