"""Migrations apply, roll back and re-apply on SQLite and PostgreSQL, matching the models."""

from __future__ import annotations

import asyncio
import os
import secrets
import subprocess
import sys
from datetime import UTC, date, datetime
from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import inspect
from sqlalchemy.ext.asyncio import create_async_engine
from sqlmodel import SQLModel

import tenants.models  # noqa: F401
from gateway.core.db import Database
from gateway.core.migrate import downgrade, upgrade
from tenants.models import UsageRecord
from tenants.models.usage import is_partition
from tenants.usage.export import iter_records
from tenants.usage.repository import UsageRepository
from tests.conftest import PG_URL, _pg_admin_execute


def include_name(name: str | None, type_: str, parent_names: object) -> bool:
    """The partitions of `usage_records` are made at run time, not by the models."""
    return not (type_ == "table" and name is not None and is_partition(name))


TABLES = {
    "tenants",
    "api_keys",
    "agents",
    "agent_versions",
    "usage_records",
    "usage_rollups",
    "model_prices",
    "usage_dead_letters",
    "jwt_configs",
    "admin_users",
    "audit_events",
    "conversations",
    "conversation_items",
    "tool_secrets",
    "tenant_upstreams",
    "stored_runs",
    "alembic_version",
}


async def _inspect(url: str) -> tuple[set[str], list[object]]:
    engine = create_async_engine(url)
    try:
        async with engine.connect() as conn:

            def read(sync_conn: object) -> tuple[set[str], list[object]]:
                names = set(inspect(sync_conn).get_table_names())
                opts = {"compare_type": True, "include_name": include_name}
                ctx = MigrationContext.configure(sync_conn, opts=opts)
                return names, list(compare_metadata(ctx, SQLModel.metadata))

            return await conn.run_sync(read)
    finally:
        await engine.dispose()


@pytest.fixture(params=["sqlite", "postgres"])
def empty_database(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite+aiosqlite:///{tmp_path / 'm.db'}"
    url: str = request.getfixturevalue("postgres_url")
    downgrade(url, "base")
    return url


def test_upgrade_downgrade_upgrade(empty_database: str) -> None:
    upgrade(empty_database)
    names, diff = asyncio.run(_inspect(empty_database))
    assert names >= TABLES
    assert diff == [], f"models and migrations differ: {diff}"
    downgrade(empty_database, "base")
    names, _ = asyncio.run(_inspect(empty_database))
    assert names <= {"alembic_version"}
    upgrade(empty_database)
    names, _ = asyncio.run(_inspect(empty_database))
    assert names >= TABLES


def test_0003_adds_and_removes_only_the_conversation_tables(empty_database: str) -> None:
    conversation_tables = {"conversations", "conversation_items"}
    upgrade(empty_database, "0002")
    names, _ = asyncio.run(_inspect(empty_database))
    assert not names & conversation_tables
    upgrade(empty_database, "0003")
    names, _ = asyncio.run(_inspect(empty_database))
    assert names >= conversation_tables
    downgrade(empty_database, "0002")
    after, _ = asyncio.run(_inspect(empty_database))
    assert after == names - conversation_tables
    upgrade(empty_database)  # leave the session's PostgreSQL database at head


def test_usage_records_export_in_run_id_byte_order_under_any_collation() -> None:
    """A database created with a linguistic collation (`en-US`, the default of many
    clusters): the export still walks run ids in byte order, as on SQLite (it sorted
    `run_a` before `run_B`)."""
    name = f"gw_icu_{secrets.token_hex(4)}"
    try:
        asyncio.run(
            _pg_admin_execute(
                f'CREATE DATABASE "{name}" TEMPLATE template0 LOCALE_PROVIDER icu '
                "ICU_LOCALE 'en-US' LOCALE 'C.UTF-8'"
            )
        )
    except Exception as exc:  # PostgreSQL unreachable: a failure, never a skip (CI)
        raise AssertionError(f"could not create an ICU database: {exc}") from exc
    base, _, _ = PG_URL.rpartition("/")
    url = f"{base}/{name}"
    ids = ["run_a", "run_B", "run_0", "run_Z", "run_b", "run_A1", "run_a0"]

    async def exported() -> list[str]:
        db = Database(url)
        try:
            day = date(2026, 12, 1)
            rows = [
                UsageRecord(
                    run_id=run_id, tenant_id="ten_icu", agent="bot", model="m", status="completed",
                    day=day, created_at=datetime(2026, 12, 1, 12, tzinfo=UTC),
                )
                for run_id in ids
            ]  # fmt: skip
            async with db.unit() as session:
                await UsageRepository(session).add_many(rows)
            records = iter_records(db, tenant_id="ten_icu", start=day, end=day, after=None)
            first = [r["run_id"] async for r in records]
            # And a page boundary: the cursor continues in the same order.
            records = iter_records(
                db, tenant_id="ten_icu", start=day, end=day, after=None, page_size=3
            )
            paged = [r["run_id"] async for r in records]
            assert paged == first
            return first
        finally:
            await db.dispose()

    try:
        upgrade(url)
        assert asyncio.run(exported()) == sorted(ids)
    finally:
        asyncio.run(_pg_admin_execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


def test_two_upgrades_at_once_take_turns() -> None:
    """Two `gateway db upgrade` on one empty PostgreSQL database at once (a retried Job beside
    the first): both succeed, the second finding the schema at head. One failed with a
    duplicate-key error that read like a broken database."""
    name = f"gw_race_{secrets.token_hex(4)}"
    asyncio.run(_pg_admin_execute(f'CREATE DATABASE "{name}"'))
    base, _, _ = PG_URL.rpartition("/")
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("GATEWAY_")},
        "GATEWAY_DATABASE_URL": f"{base}/{name}",
        "GATEWAY_ENV": "development",
    }
    gateway = str(Path(sys.executable).with_name("gateway"))
    try:
        procs = [
            subprocess.Popen(
                [gateway, "db", "upgrade"],
                env=env,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
                text=True,
            )
            for _ in range(3)
        ]
        errors = [p.communicate(timeout=120)[1] for p in procs]
        outcomes = [(p.returncode, err) for p, err in zip(procs, errors, strict=True)]
        assert [code for code, _ in outcomes] == [0, 0, 0], outcomes
        names, diff = asyncio.run(_inspect(f"{base}/{name}"))
        assert names >= TABLES and diff == []
    finally:
        asyncio.run(_pg_admin_execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
