"""Migrations apply, roll back and re-apply on SQLite and PostgreSQL, matching the models."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import inspect
from sqlalchemy.ext.asyncio import create_async_engine
from sqlmodel import SQLModel

import tenants.models  # noqa: F401
from gateway.core.migrate import downgrade, upgrade
from tenants.models.usage import is_partition


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
