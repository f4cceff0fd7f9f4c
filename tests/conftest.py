"""Shared fixtures: databases (SQLite and PostgreSQL), the app, clients, the mock LLM.

PostgreSQL and Redis tests run against the real servers. Outside CI a missing server skips
those tests with a reason; with CI=true a missing server fails them.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import shutil
import subprocess
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from gateway.core.config import Settings
from gateway.core.migrate import upgrade

IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")
PG_URL = os.environ.get(
    "GATEWAY_TEST_DATABASE_URL", "postgresql+asyncpg://postgres@127.0.0.1:5432/test"
)
REDIS_URL = os.environ.get("GATEWAY_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
ADMIN_TOKEN = "test-admin-token-0123456789abcdef"
SECRET_KEY = "test-secret-key-0123456789abcdef0123456789"
TABLES = (
    "stored_runs",
    "tool_secrets",
    "tenant_upstreams",
    "conversation_items",
    "conversations",
    "audit_events",
    "admin_users",
    "jwt_configs",
    "usage_records",
    "usage_rollups",
    "model_prices",
    "usage_dead_letters",
    "agent_versions",
    "agents",
    "api_keys",
    "tenants",
)


POSTGRES_FIXTURES = frozenset({"postgres_url"})
REDIS_FIXTURES = frozenset({"redis_url", "redis_server"})


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark every test that needs a server by what it uses, so `-m "not postgres and not
    redis"` is a fast local loop: the fixtures it requests, or a parametrisation that selects
    the server (`database_url[postgres]`, `...[redis]`). A test that reaches a server another
    way carries the mark itself."""
    for item in items:
        names = set(getattr(item, "fixturenames", ()))
        callspec = getattr(item, "callspec", None)
        ids = set(callspec.id.split("-")) if callspec is not None else set()
        if names & POSTGRES_FIXTURES or "postgres" in ids:
            item.add_marker(pytest.mark.postgres)
        if names & REDIS_FIXTURES or "redis" in ids:
            item.add_marker(pytest.mark.redis)


def unavailable(what: str, reason: str) -> None:
    """Skip outside CI, fail in CI: CI must exercise the real services."""
    message = f"{what} unavailable: {reason}"
    if IN_CI:
        pytest.fail(message + " (CI=true: required)")
    pytest.skip(message)


async def _pg_admin_execute(sql: str) -> None:
    import asyncpg

    dsn = PG_URL.replace("postgresql+asyncpg://", "postgresql://")
    conn = await asyncpg.connect(dsn, timeout=3)
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    """A fresh, migrated PostgreSQL database for this test session (dropped at the end)."""
    name = f"gw_test_{secrets.token_hex(4)}"
    try:
        asyncio.run(_pg_admin_execute(f'CREATE DATABASE "{name}"'))
    except (OSError, Exception) as exc:  # connection refused, auth, missing driver
        unavailable("PostgreSQL", f"{type(exc).__name__}: {exc}")
    base, _, _ = PG_URL.rpartition("/")
    url = f"{base}/{name}"
    upgrade(url)
    yield url
    asyncio.run(_pg_admin_execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


@pytest.fixture(scope="session")
def sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A migrated SQLite file, copied for each test (migrating once is faster)."""
    path = tmp_path_factory.mktemp("sqlite") / "template.db"
    upgrade(f"sqlite+aiosqlite:///{path}")
    return path


@pytest.fixture(params=["sqlite", "postgres"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path, sqlite_template: Path) -> str:
    """Each test that uses it runs on SQLite and on PostgreSQL (emptied before the test)."""
    if request.param == "sqlite":
        path = tmp_path / "gateway.db"
        shutil.copy(sqlite_template, path)
        return f"sqlite+aiosqlite:///{path}"
    url: str = request.getfixturevalue("postgres_url")
    asyncio.run(_truncate(url))
    return url


async def _truncate(url: str) -> None:
    from sqlalchemy import text
    from sqlalchemy.ext.asyncio import create_async_engine

    engine = create_async_engine(url)
    try:
        async with engine.begin() as conn:
            await conn.execute(text(f"TRUNCATE {', '.join(TABLES)} CASCADE"))
    finally:
        await engine.dispose()


@pytest.fixture
def sqlite_url(tmp_path: Path, sqlite_template: Path) -> str:
    """SQLite only, for tests whose behaviour does not depend on the database."""
    path = tmp_path / "gateway.db"
    shutil.copy(sqlite_template, path)
    return f"sqlite+aiosqlite:///{path}"


def wait_answering(
    url: str, proc: subprocess.Popen[bytes], log_path: Path, timeout_s: float = 30
) -> None:
    """Wait until a spawned process serves `url` with 200; fail with the end of its log if it
    exits or the time runs out."""
    deadline = time.monotonic() + timeout_s
    while True:
        assert proc.poll() is None, f"process exited: {log_path.read_text()[-3000:]}"
        try:
            if httpx.get(url, timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        assert time.monotonic() < deadline, f"{url} never answered: {log_path.read_text()[-3000:]}"
        time.sleep(0.1)


def gateway_env(database_url: str, **extra: str) -> dict[str, str]:
    """The environment of a gateway process under test (nothing inherited from GATEWAY_* or
    OPENAI_*); `extra` adds or overrides variables."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("GATEWAY_", "OPENAI_"))}
    env.update(
        GATEWAY_ENV="test",
        GATEWAY_DATABASE_URL=database_url,
        GATEWAY_ADMIN_TOKEN=ADMIN_TOKEN,
        GATEWAY_SECRET_KEY=SECRET_KEY,
        GATEWAY_USAGE_FLUSH_INTERVAL_S="0.05",
        GATEWAY_PRINCIPAL_CACHE_TTL_S="0.25",
        # No spill file unless a test asks for one: a shared default path would replay one
        # test's records into another test's database.
        GATEWAY_USAGE_SPILL_PATH="",
        OPENAI_API_KEY="test-upstream-key",
    )
    env.update(extra)
    return env


def make_settings(database_url: str, **overrides: Any) -> Settings:
    """Test settings: no environment leaks in, fast flushes, a known admin token."""
    values: dict[str, Any] = {
        "env": "test",
        "database_url": database_url,
        "admin_token": ADMIN_TOKEN,
        "secret_key": SECRET_KEY,
        "usage_flush_interval_s": 0.05,
        "principal_cache_ttl_s": 0.25,
        "usage_spill_path": "",
        "gc_gen0_threshold": 0,
        "openai_api_key": "test-upstream-key",
        "openai_base_url": "http://127.0.0.1:9/v1",
    }
    values.update(overrides)
    return Settings(_env_file=None, **values)


async def started_app(settings: Settings) -> AsyncIterator[FastAPI]:
    from gateway.app import create_app

    app = create_app(settings)
    async with app.router.lifespan_context(app):
        yield app


@pytest.fixture
async def app(database_url: str) -> AsyncIterator[FastAPI]:
    """The app on each database backend, lifespan running."""
    async for started in started_app(make_settings(database_url)):
        yield started


@pytest.fixture
async def client(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://gateway.test") as c:
        yield c


@pytest.fixture
def admin_headers() -> dict[str, str]:
    return {"Authorization": f"Bearer {ADMIN_TOKEN}"}


@pytest.fixture
def redis_url() -> str:
    """The real Redis; pair it with `redis_prefix` so concurrent test runs never collide."""
    import redis

    client = redis.Redis.from_url(REDIS_URL, socket_timeout=2, socket_connect_timeout=2)
    try:
        client.ping()
    except redis.RedisError as exc:
        unavailable("Redis", f"{type(exc).__name__}: {exc}")
    finally:
        client.close()
    return REDIS_URL


@pytest.fixture
def redis_prefix(redis_url: str) -> Iterator[str]:
    """A key prefix of this test alone (`GATEWAY_REDIS_KEY_PREFIX`); its keys are removed after."""
    import redis

    prefix = f"test:{secrets.token_hex(6)}:"
    yield prefix
    client = redis.Redis.from_url(redis_url, socket_timeout=2, socket_connect_timeout=2)
    try:
        keys = list(client.scan_iter(match=f"{prefix}*", count=1000))
        if keys:
            client.delete(*keys)
    finally:
        client.close()


@pytest.fixture
def redis_settings(redis_url: str, redis_prefix: str) -> dict[str, str]:
    """Settings overrides that point a test app at the real Redis under its own prefix."""
    return {"redis_url": redis_url, "redis_key_prefix": redis_prefix}
