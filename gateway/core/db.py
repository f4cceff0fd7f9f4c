"""Async database access: one engine per process, one session per unit of work.

SQLite (aiosqlite) is the embedded default; PostgreSQL (asyncpg) is the production store. The
engine is created in the app's lifespan.

A unit of work (`Database.unit()`) is one session that commits once when its block succeeds
and rolls back when it raises; repositories and services add and flush, they never commit.
Each request that uses the database gets one unit (`SessionDep`), committed after the endpoint
returns and before the response is sent; work outside a request (usage batches, `last_used_at`
marks, conversation appends, paused runs, the CLI) opens its own. What must only happen once
the change is durable (a cache invalidation on every replica) is registered with
`after_commit` and runs after a successful commit, never after a rollback.

An outage is a fast, clean answer, never a hang:
- every wait is bounded: connecting (`connect_timeout_s`), waiting for a pooled connection
  (`pool_timeout_s`) and each statement (`statement_timeout_s`, enforced by the server and,
  for a server that stops answering at all, by the client as well);
- a failure that means "the database is unavailable" (`is_database_unavailable`) opens a
  short circuit: for `retry_s`, `session()` raises `DatabaseUnavailableError` (503 with
  Retry-After) at once instead of letting every request wait for its own timeout. Then one
  caller probes; a successful connection checkout closes the circuit.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Annotated, Any

import asyncpg
from fastapi import Depends, Request
from sqlalchemy import event, exc
from sqlalchemy.ext.asyncio import AsyncEngine, async_sessionmaker, create_async_engine
from sqlmodel.ext.asyncio.session import AsyncSession

from gateway.core.errors import ServiceUnavailableError
from gateway.core.state import app_state

logger = logging.getLogger("gateway.db")

UNAVAILABLE_SQLSTATE_CLASSES = frozenset({"08", "53", "57"})
"""Connection exception, insufficient resources, operator intervention (statement timeout,
server shutting down)."""


CONNECT_REFUSED_SQLSTATES = frozenset({"55000", "3D000", "28000", "28P01"})
"""A new connection refused: the database does not accept connections now
(`ALLOW_CONNECTIONS false`), does not exist, or refuses the configured role."""


class DatabaseUnavailableError(ServiceUnavailableError):
    default_code = "database_unavailable"
    default_message = "The database is unavailable; retry shortly."


def is_database_unavailable(error: BaseException) -> bool:
    """True when `error` says the database cannot be reached or did not answer in time (as
    opposed to refusing a statement or a value)."""
    if isinstance(error, DatabaseUnavailableError | OSError):  # TimeoutError, ConnectionError
        return True
    if isinstance(error, exc.OperationalError | exc.InterfaceError | exc.TimeoutError):
        return True
    if isinstance(error, exc.DBAPIError):
        if error.connection_invalidated:
            return True
        state = getattr(error.orig, "sqlstate", None) or getattr(error.orig, "pgcode", None)
        if isinstance(state, str):
            if error.statement is None and state in CONNECT_REFUSED_SQLSTATES:
                return True  # raised while connecting (a commit's failure has no statement too)
            return state[:2] in UNAVAILABLE_SQLSTATE_CLASSES
        # The driver's own exception: a connection lost mid-operation carries no SQLSTATE.
        driver = getattr(error.orig, "__cause__", None)
        return isinstance(driver, OSError | asyncpg.exceptions.InterfaceError)
    if isinstance(error, asyncpg.exceptions.InterfaceError):
        return True
    cause = error.__cause__
    return cause is not None and cause is not error and is_database_unavailable(cause)


class Database:
    """The engine and the session factory of one process."""

    def __init__(
        self,
        url: str,
        *,
        echo: bool = False,
        connect_timeout_s: float = 2.0,
        pool_timeout_s: float = 2.0,
        statement_timeout_s: float = 5.0,
        retry_s: float = 1.0,
    ) -> None:
        kwargs: dict[str, Any] = {"echo": echo}
        if url.startswith("sqlite"):
            kwargs["connect_args"] = {"timeout": 30}
        else:
            kwargs.update(
                pool_size=10,
                max_overflow=20,
                pool_pre_ping=True,
                pool_timeout=pool_timeout_s,
                connect_args={
                    "timeout": connect_timeout_s,
                    # Client side: also ends a wait on a server that stopped answering.
                    "command_timeout": statement_timeout_s,
                    "server_settings": {
                        "statement_timeout": str(max(1, int(statement_timeout_s * 900)))
                    },
                },
            )
        self.url = url
        self.retry_s = retry_s
        self.retry_after_s = max(1, math.ceil(retry_s))
        self._probe_s = connect_timeout_s + statement_timeout_s
        self._down_until = 0.0
        self.engine: AsyncEngine = create_async_engine(url, **kwargs)
        if url.startswith("sqlite"):
            event.listen(self.engine.sync_engine, "connect", _sqlite_pragmas)
        event.listen(self.engine.sync_engine.pool, "checkout", self._checked_out)
        self.sessions = async_sessionmaker(self.engine, class_=AsyncSession, expire_on_commit=False)

    def session(self) -> AsyncSession:
        """A new session for reads; use as `async with db.session() as session:` (closing it
        rolls back). Raises `DatabaseUnavailableError` at once while the circuit is open."""
        self.check_available()
        return self.sessions()

    @asynccontextmanager
    async def unit(self) -> AsyncIterator[AsyncSession]:
        """One unit of work: `async with db.unit() as session:` commits once if the block
        succeeds and rolls back if it raises (the commit's own failure included), then closes
        the session; after a successful commit the `after_commit` callbacks run.

        Ending the session on a database that went away fails too: that must not replace the
        block's own error (it opens the circuit instead)."""
        session = self.session()
        callbacks: list[Callable[[], Awaitable[None]]] = []
        session.info[AFTER_COMMIT] = callbacks
        try:
            yield session
            await session.commit()
        except BaseException:
            callbacks.clear()
            await self._end_quietly(session.rollback)
            await self._end_quietly(session.close)
            raise
        await self._close(session)
        for callback in callbacks:
            try:
                await callback()
            except Exception:
                # The change is committed: answering an error now would misreport it.
                logger.exception("after-commit callback failed")

    async def _close(self, session: AsyncSession) -> None:
        try:
            await session.close()
        except Exception as error:
            if not is_database_unavailable(error):
                raise
            self.failed(error)
            logger.debug("session close on an unavailable database: %s", error)

    async def _end_quietly(self, end: Callable[[], Awaitable[None]]) -> None:
        """Roll back or close after an error, never raising over that error."""
        try:
            await end()
        except Exception as error:
            if is_database_unavailable(error):
                self.failed(error)
                logger.debug("session end on an unavailable database: %s", error)
            else:
                logger.warning("session end after an error failed", exc_info=True)

    @property
    def available(self) -> bool:
        """False while the circuit is open (a recent failure said the database is down)."""
        return self._down_until == 0.0

    def check_available(self) -> None:
        if self._down_until == 0.0:
            return
        now = time.monotonic()
        if now < self._down_until:
            raise DatabaseUnavailableError(headers={"Retry-After": str(self.retry_after_s)})
        # This caller probes; the others keep failing fast until it succeeds (a checkout
        # closes the circuit) or its bounded attempt is over.
        self._down_until = now + self._probe_s

    def mark_unavailable(self) -> None:
        """Open the circuit for `retry_s`."""
        self._down_until = time.monotonic() + self.retry_s

    def failed(self, error: BaseException) -> bool:
        """Note a failed database call: opens the circuit when `error` says the database is
        unavailable (not for the fast refusal of an open circuit itself). True if it did."""
        if isinstance(error, DatabaseUnavailableError) or not is_database_unavailable(error):
            return False
        self.mark_unavailable()
        return True

    def _checked_out(self, *_: Any) -> None:
        self._down_until = 0.0

    async def ping(self) -> None:
        """Raise if the database cannot answer, and `SchemaMissingError` if it holds no
        migrated schema (a replica on a database nobody ran `gateway db upgrade` on can serve
        nothing). Any revision counts: during a rolling upgrade the old release's replicas
        stay ready on the new release's schema."""
        from sqlalchemy import text
        from sqlalchemy.exc import DBAPIError

        async with self.engine.connect() as conn:
            try:
                row = (await conn.execute(text("SELECT version_num FROM alembic_version"))).first()
            except DBAPIError as exc:
                if "alembic_version" not in str(exc.orig):
                    raise
                row = None  # no such table
        if row is None:
            raise SchemaMissingError("the database has no schema: run `gateway db upgrade`")

    async def dispose(self) -> None:
        await self.engine.dispose()


class SchemaMissingError(RuntimeError):
    """The database answers but was never migrated."""


AFTER_COMMIT = "gateway.after_commit"
"""`session.info` key of a unit of work's after-commit callbacks (present only in a unit)."""


def after_commit(session: AsyncSession, callback: Callable[[], Awaitable[None]]) -> None:
    """Run `callback` once the unit of work holding `session` has committed; never if it rolls
    back. A callback that fails is logged: the change it follows is committed regardless.

    Raises:
        RuntimeError: `session` is not a unit of work's (nothing would ever commit it).
    """
    callbacks: list[Callable[[], Awaitable[None]]] | None = session.info.get(AFTER_COMMIT)
    if callbacks is None:
        raise RuntimeError("after_commit needs the session of a unit of work (Database.unit)")
    callbacks.append(callback)


def _sqlite_pragmas(dbapi_conn: Any, _: Any) -> None:
    # WAL lets readers proceed while the usage writer commits; busy_timeout waits for a lock.
    cursor = dbapi_conn.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.close()


async def get_database(request: Request) -> Database:
    """The process database (created in the lifespan).

    Dependencies are `async def` throughout: FastAPI runs plain `def` ones in a thread pool.
    """
    return app_state(request).db


async def get_session(request: Request) -> AsyncIterator[AsyncSession]:
    """The request's unit of work: committed once after the endpoint returns, before the
    response is sent; rolled back if anything raised (`Database.unit`)."""
    async with (await get_database(request)).unit() as session:
        yield session


# `scope="function"`: the unit ends when the endpoint function returns, before the response is
# sent, so a client that sees a 2xx can read what it wrote, and a failed commit is the
# request's error response rather than a lost write behind a success already sent.
SessionDep = Annotated[AsyncSession, Depends(get_session, scope="function")]
DatabaseDep = Annotated[Database, Depends(get_database)]
