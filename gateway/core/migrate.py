"""Apply the Alembic migrations programmatically (`gateway db upgrade`, `make run`, tests)."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy.engine import Connection
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import create_async_engine

MIGRATIONS_DIR = Path(__file__).resolve().parent.parent / "migrations"


def alembic_config(database_url: str) -> Config:
    """An Alembic config pointing at our migrations and the given database."""
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    cfg.set_main_option("sqlalchemy.url", database_url)
    return cfg


def upgrade(database_url: str, revision: str = "head") -> None:
    """Migrate the database to `revision` (blocking; call from sync code or a thread)."""
    command.upgrade(alembic_config(database_url), revision)


def downgrade(database_url: str, revision: str) -> None:
    command.downgrade(alembic_config(database_url), revision)


async def upgrade_async(database_url: str, revision: str = "head") -> None:
    """`upgrade` from async code (Alembic's env runs its own event loop, so use a thread)."""
    await asyncio.to_thread(upgrade, database_url, revision)


def head_revision() -> str:
    """The newest migration this release ships."""
    head = ScriptDirectory.from_config(alembic_config("")).get_current_head()
    assert head is not None, "no migrations found"
    return head


def _revision_of(connection: Connection) -> str | None:
    return MigrationContext.configure(connection).get_current_revision()


async def current_revision(database_url: str) -> str | None:
    """The revision the database is at (None: never migrated)."""
    engine = create_async_engine(database_url)
    try:
        async with engine.connect() as conn:
            return await conn.run_sync(_revision_of)
    finally:
        await engine.dispose()


async def wait_for_head(database_url: str, timeout_s: float, poll_s: float = 2.0) -> str | None:
    """Wait until the database is at this release's head (an unreachable database counts as
    not yet): None once it is, else, when `timeout_s` passed first, what the last look found
    (the driver's first line, never the URL). New replicas wait here for the migration run by
    the release's one-shot `gateway db upgrade`."""
    head = head_revision()
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            current = await current_revision(database_url)
            if current == head:
                return None
            found = f"it is at revision {current}" if current else "it was never migrated"
        except (OSError, SQLAlchemyError) as exc:  # not reachable yet: it may be starting too
            lines = str(getattr(exc, "orig", None) or exc).strip().splitlines()
            found = f"not reachable: {lines[0] if lines else type(exc).__name__}"
        if time.monotonic() >= deadline:
            return found
        await asyncio.sleep(poll_s)
