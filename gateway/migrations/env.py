"""Alembic environment: runs migrations on the async engine of the configured database."""

from __future__ import annotations

import asyncio

from alembic import context
from sqlalchemy import text
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import create_async_engine
from sqlmodel import SQLModel

import tenants.models  # noqa: F401  (registers the tables on the metadata)
from tenants.models.usage import is_partition

config = context.config
target_metadata = SQLModel.metadata
MIGRATION_LOCK = 0x6167_6D69_6772_6174  # "agmigrat": this application's migrations


def include_name(name: str | None, type_: str, parent_names: object) -> bool:
    """Autogenerate ignores the monthly partitions of `usage_records` (made at run time)."""
    return not (type_ == "table" and name is not None and is_partition(name))


def _run(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        render_as_batch=connection.dialect.name == "sqlite",
        compare_type=True,
        include_name=include_name,
    )
    with context.begin_transaction():
        if connection.dialect.name == "postgresql":
            # Two upgrades at once (a retried Job beside the first, two `migrate` services)
            # take turns: the second waits here, then finds the schema at head. It failed
            # half-way with a duplicate-key error that read like a broken database.
            connection.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": MIGRATION_LOCK})
        context.run_migrations()


async def _run_async(url: str) -> None:
    engine = create_async_engine(url)
    try:
        async with engine.begin() as conn:
            await conn.run_sync(_run)
    finally:
        await engine.dispose()


def run_migrations_online() -> None:
    url = config.get_main_option("sqlalchemy.url")
    assert url, "sqlalchemy.url must be set by gateway.core.migrate"
    connection = config.attributes.get("connection")
    if connection is not None:
        _run(connection)
    else:
        asyncio.run(_run_async(url))


if context.is_offline_mode():
    raise SystemExit("offline migrations are not supported; run `gateway db upgrade`")
run_migrations_online()
