"""`gateway db wait`: a new replica's init step waits for the release's migration."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

from tests.conftest import gateway_env

GATEWAY = str(Path(sys.executable).parent / "gateway")


def run(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [GATEWAY, *args], env=env, capture_output=True, text=True, timeout=60, check=False
    )


def test_wait_gives_up_on_an_unmigrated_database(tmp_path: Path) -> None:
    env = gateway_env(f"sqlite+aiosqlite:///{tmp_path / 'fresh.db'}")
    started = time.monotonic()
    result = run(env, "db", "wait", "--timeout", "1")
    assert result.returncode == 1
    assert "not at revision" in result.stderr and "Traceback" not in result.stderr
    assert "never migrated" in result.stderr  # why it waited, for the init container's log
    assert time.monotonic() - started < 30


def test_wait_says_why_a_database_it_cannot_reach_is_not_ready() -> None:
    env = gateway_env("postgresql+asyncpg://postgres:secret-pw@127.0.0.1:1/nothing")
    result = run(env, "db", "wait", "--timeout", "1")
    assert result.returncode == 1
    assert "not reachable" in result.stderr and "Traceback" not in result.stderr
    assert "secret-pw" not in result.stderr and result.stderr.count("\n") == 1


def test_wait_returns_once_the_migration_has_run(tmp_path: Path) -> None:
    env = gateway_env(f"sqlite+aiosqlite:///{tmp_path / 'fresh.db'}")
    waiter = subprocess.Popen(
        [GATEWAY, "db", "wait", "--timeout", "60"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert run(env, "db", "upgrade").returncode == 0
        out, err = waiter.communicate(timeout=60)
    finally:
        waiter.kill()
    assert waiter.returncode == 0, err
    assert out.startswith("database at ")


def test_wait_returns_at_once_on_a_migrated_database(database_url: str) -> None:
    result = run(gateway_env(database_url), "db", "wait", "--timeout", "0")
    assert result.returncode == 0, result.stderr
