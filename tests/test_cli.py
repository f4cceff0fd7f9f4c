"""The `gateway` command as an operator uses it, in a real subprocess."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from gateway.cli.serve import uses_mock
from tests.conftest import make_settings, wait_answering

GATEWAY = str(Path(sys.executable).parent / "gateway")


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    return {
        **os.environ,
        "GATEWAY_DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path / 'cli.db'}",
        "GATEWAY_ENV": "development",
    }


def gateway(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [GATEWAY, *args], env=env, capture_output=True, text=True, timeout=60, check=False
    )


def test_operator_commands(env: dict[str, str], tmp_path: Path) -> None:
    assert gateway(env, "db", "upgrade").returncode == 0
    r = gateway(env, "tenants", "create", "--slug", "cli-co", "--name", "CLI Co")
    assert r.returncode == 0, r.stderr
    tenant = json.loads(r.stdout)
    assert tenant["slug"] == "cli-co" and tenant["id"].startswith("ten_")

    r = gateway(env, "tenants", "create", "--slug", "cli-co", "--name", "again")
    assert r.returncode == 1 and "error:" in r.stderr and "Traceback" not in r.stderr
    # A refused value is named by its field, in words (not Python's tuple of its location).
    r = gateway(env, "tenants", "create", "--slug", "empty-name", "--name", " ")
    assert r.returncode == 1 and r.stderr.startswith("error: name: "), r.stderr
    assert "(" not in r.stderr and "Value error" not in r.stderr

    r = gateway(env, "keys", "issue", "--tenant", "cli-co", "--name", "ops")
    assert r.returncode == 0, r.stderr
    key = json.loads(r.stdout)
    assert key["key"].startswith("gw_") and key["id"].startswith("key_")

    spec = tmp_path / "agent.json"
    spec.write_text(json.dumps({"instructions": "Hi", "tools": ["calculator"]}))
    r = gateway(
        env, "agents", "put", "--tenant", tenant["id"], "--name", "helper", "--file", str(spec)
    )
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["version"] == 1
    r = gateway(env, "agents", "put", "--tenant", "cli-co", "--name", "helper", "--file", str(spec))
    assert json.loads(r.stdout)["version"] == 2

    spec.write_text(json.dumps({"tools": ["rm_rf"]}))
    r = gateway(env, "agents", "put", "--tenant", "cli-co", "--name", "helper", "--file", str(spec))
    assert r.returncode == 1 and "unknown tool" in r.stderr

    # The checks the admin API's PUT makes against the tenant and the egress guard hold too:
    # never a version stored that every run of it would fail.
    metadata = {"type": "http", "name": "meta", "description": "d"}
    for refused, why in (
        ({"tools": [{**metadata, "url": "https://169.254.169.254/latest"}]}, "not allowed"),
        ({"instructions": "x", "upstream": "nope"}, "nope"),
    ):
        spec.write_text(json.dumps(refused))
        r = gateway(
            env, "agents", "put", "--tenant", "cli-co", "--name", "helper", "--file", str(spec)
        )
        assert r.returncode == 1 and why in r.stderr and "Traceback" not in r.stderr, r.stderr

    # A model name the admin API's path refuses is refused here too (it could be neither read
    # nor deleted through the API).
    for model in ("", "m" * 129, "/leading-slash"):
        r = gateway(env, "prices", "set", model, "--input", "1", "--output", "1")
        assert r.returncode == 1 and "Traceback" not in r.stderr, (model, r.stderr)
    assert gateway(env, "prices", "set", "gpt-x", "--input", "1", "--output", "2").returncode == 0

    r = gateway(env, "keys", "issue", "--tenant", "nobody")
    assert r.returncode == 1 and "no tenant" in r.stderr

    # Operator commands leave the same audit trail as the admin API, with actor "cli".
    import sqlite3

    db = sqlite3.connect(env["GATEWAY_DATABASE_URL"].split("///", 1)[1])
    rows = db.execute("SELECT actor, action, tenant_id FROM audit_events ORDER BY id").fetchall()
    db.close()
    actions = [(actor, action) for actor, action, _ in rows]
    assert actions == [
        ("cli", "tenant.create"),
        ("cli", "key.create"),
        ("cli", "agent.create"),
        ("cli", "agent.put"),
        ("cli", "price.put"),
    ]
    assert {tenant_id for _, _, tenant_id in rows} == {tenant["id"], None}


def test_a_database_or_file_it_cannot_use_is_one_line_not_a_traceback(
    env: dict[str, str], tmp_path: Path
) -> None:
    """An operator who skipped `gateway db upgrade`, or named a database that is not there,
    reads what is wrong (and never the URL's password); a spec file that is not there is a
    usage error."""
    r = gateway(env, "tenants", "create", "--slug", "early", "--name", "Early")
    assert r.returncode == 1
    assert "Traceback" not in r.stderr and "SELECT" not in r.stderr
    assert "no such table" in r.stderr and "gateway db upgrade" in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1

    absent = {**env, "GATEWAY_DATABASE_URL": "postgresql+asyncpg://gw:pw-4411@127.0.0.1:1/gw"}
    for args in (("db", "upgrade"), ("keys", "issue", "--tenant", "x")):
        r = gateway(absent, *args)
        assert r.returncode == 1, (args, r.stderr)
        assert r.stderr.startswith("error: the database cannot be used:"), r.stderr
        assert "Traceback" not in r.stderr and "pw-4411" not in r.stderr

    # A schema older than the release (a column added since): the same one line and the fix.
    assert gateway(env, "db", "upgrade", "--revision", "0008").returncode == 0
    r = gateway(env, "tenants", "create", "--slug", "early", "--name", "Early")
    assert r.returncode == 1 and len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert "older than this release" in r.stderr and "gateway db upgrade" in r.stderr

    assert gateway(env, "db", "upgrade").returncode == 0
    for path in (tmp_path / "missing.json", tmp_path):
        r = gateway(env, "agents", "put", "--tenant", "x", "--name", "a", "--file", str(path))
        assert r.returncode == 2 and "Traceback" not in r.stderr
        assert "--file" in r.stderr


def test_help_says_which_characters_a_name_may_have(env: dict[str, str]) -> None:
    r = gateway(env, "tenants", "create", "--help")
    assert "2-40 of a-z, 0-9 and -" in r.stdout
    r = gateway(env, "agents", "put", "--help")
    assert "1-64 of a-z, 0-9, _ and -" in r.stdout


def test_help_lists_the_commands(env: dict[str, str]) -> None:
    r = gateway(env, "--help")
    assert r.returncode == 0
    for command in ("serve", "db", "mock-llm", "demo", "tenants", "keys", "agents"):
        assert command in r.stdout


def test_invalid_settings_name_the_setting_and_never_echo_a_secret(env: dict[str, str]) -> None:
    token = "RealAdminToken0123456789abcdefXYZ"
    production = {
        **env,
        "GATEWAY_ENV": "production",
        "GATEWAY_DATABASE_URL": "postgresql+asyncpg://gw:db-password-77@127.0.0.1:1/gw",
        "GATEWAY_ADMIN_TOKEN": token,
        "GATEWAY_SECRET_KEY": "too-short-secret",
    }
    r = gateway(production, "serve", "--port", "1")
    assert r.returncode == 2
    assert "GATEWAY_SECRET_KEY must be a real secret" in r.stderr
    assert "Traceback" not in r.stderr
    for secret in (token[-12:], "db-password-77", "too-short-secret"):
        assert secret not in r.stdout + r.stderr
    # The example Secret's placeholders stop a production start too (the docs said so; a
    # metrics token or upstream key of `change-me` started).
    production["GATEWAY_SECRET_KEY"] = "s" * 40
    for name in ("GATEWAY_METRICS_TOKEN", "OPENAI_API_KEY"):
        r = gateway({**production, name: "change-me"}, "serve", "--port", "1")
        assert r.returncode == 2, r.stderr
        assert f"{name} is a placeholder" in r.stderr and "Traceback" not in r.stderr


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@contextmanager
def _serving(
    env: dict[str, str],
    log_path: Path,
    stop: signal.Signals = signal.SIGTERM,
    mock_port: int | None = None,
    workers: int = 1,
) -> Iterator[str]:
    """`gateway serve` on a free port (its dev mock LLM on `mock_port`, else a free one),
    ready (GET /healthz is 200); its base URL. Stopped with `stop` after."""

    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    with log_path.open("wb") as log:
        proc = subprocess.Popen(
            [
                *(GATEWAY, "serve", "--host", "127.0.0.1", "--port", str(port)),
                *("--mock-port", str(mock_port or _free_port())),
                *("--workers", str(workers)),
            ],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        try:
            wait_answering(f"{url}/healthz", proc, log_path)
            yield url
        finally:
            proc.send_signal(stop)
            proc.wait(timeout=10)


def _failures_until_429(client: Any, url: str, forwarded_for: str, limit: int) -> list[int]:
    headers = {"Authorization": "Bearer gw_not_a_real_key", "X-Forwarded-For": forwarded_for}
    return [client.get(f"{url}/v1/agents", headers=headers).status_code for _ in range(limit + 1)]


@pytest.mark.parametrize("stop", [signal.SIGTERM, signal.SIGKILL], ids=lambda s: s.name)
def test_a_stopped_serve_leaves_no_mock_llm_behind(
    env: dict[str, str], tmp_path: Path, stop: signal.Signals
) -> None:
    import httpx

    env = {k: v for k, v in env.items() if not k.startswith("OPENAI_")}
    mock_port = _free_port()
    mock = f"http://127.0.0.1:{mock_port}/healthz"
    with _serving(env, tmp_path / "serve.log", stop=stop, mock_port=mock_port):
        assert httpx.get(mock, timeout=2).status_code == 200  # the dev mock LLM is up
    deadline = time.monotonic() + 5
    while True:
        try:
            httpx.get(mock, timeout=0.5)
        except httpx.ConnectError:
            break  # gone with its parent
        except httpx.TransportError:
            pass  # shutting down
        assert time.monotonic() < deadline, f"mock LLM still serving after {stop.name}"
        time.sleep(0.1)


@pytest.mark.parametrize("trusted", [True, False])
def test_serve_trusts_forwarded_for_only_from_configured_proxies(
    env: dict[str, str], tmp_path: Path, trusted: bool
) -> None:
    """Behind a trusted proxy each client address has its own auth-failure budget; from an
    untrusted peer `X-Forwarded-For` is ignored, so a forged header cannot dodge the limit."""
    env = {
        **env,
        "GATEWAY_AUTH_FAILURE_LIMIT": "3",
        "GATEWAY_FORWARDED_ALLOW_IPS": "127.0.0.1" if trusted else "10.255.255.1",
    }
    assert gateway(env, "db", "upgrade").returncode == 0
    import httpx

    with _serving(env, tmp_path / "serve.log") as url, httpx.Client(timeout=5) as client:
        first = _failures_until_429(client, url, "203.0.113.7", 3)
        assert first == [401, 401, 401, 429]
        other = _failures_until_429(client, url, "203.0.113.8", 3)
        if trusted:  # another client behind the proxy: its own budget
            assert other == [401, 401, 401, 429]
        else:  # the same peer whatever the header says: still blocked
            assert other == [429, 429, 429, 429]


def test_serve_bounds_websocket_frames_by_the_body_limit(
    env: dict[str, str], tmp_path: Path
) -> None:
    """`gateway serve` closes a socket whose frame is over `GATEWAY_MAX_BODY_BYTES` (1009,
    uvicorn's limit) instead of reading it whole; the app alone would read it, then refuse."""
    import asyncio

    import websockets

    env = {**env, "GATEWAY_MAX_BODY_BYTES": "4096"}
    assert gateway(env, "db", "upgrade").returncode == 0
    assert gateway(env, "tenants", "create", "--slug", "ws-co", "--name", "WS").returncode == 0
    r = gateway(env, "keys", "issue", "--tenant", "ws-co", "--name", "ws")
    assert r.returncode == 0, r.stderr
    key = json.loads(r.stdout)["key"]
    spec = tmp_path / "spec.json"
    spec.write_text(json.dumps({"instructions": "Be brief.", "model": "gpt-4.1-mini"}))
    r = gateway(
        env, "agents", "put", "--tenant", "ws-co", "--name", "assistant", "--file", str(spec)
    )
    assert r.returncode == 0, r.stderr

    async def oversized_frame(url: str) -> int | None:
        ws_url = url.replace("http://", "ws://") + "/v1/agents/assistant/ws"
        headers = {"Authorization": f"Bearer {key}"}
        async with websockets.connect(ws_url, additional_headers=headers) as socket:
            await socket.send(json.dumps({"input": "x" * 10_000}))
            try:
                reply = await asyncio.wait_for(socket.recv(), timeout=5)
            except websockets.ConnectionClosed as closed:
                return closed.rcvd.code if closed.rcvd is not None else None
            raise AssertionError(f"the frame was read and answered: {reply!r}")

    with _serving(env, tmp_path / "serve.log") as url:
        assert asyncio.run(oversized_frame(url)) == 1009  # message too big


def test_mock_llm_says_where_it_listens_and_refuses_a_taken_port(env: dict[str, str]) -> None:
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        busy = taken.getsockname()[1]
        done = subprocess.run(
            [GATEWAY, "mock-llm", "--port", str(busy)],
            env=env,
            capture_output=True,
            text=True,
            timeout=30,
        )
    assert done.returncode == 1
    assert f"error: the mock LLM's port {busy} on 127.0.0.1 is not free" in done.stderr
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    proc = subprocess.Popen(
        [GATEWAY, "mock-llm", "--port", str(port)],
        env={**env, "PYTHONUNBUFFERED": "1"},
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert line.startswith(f"mock LLM: OPENAI_BASE_URL=http://127.0.0.1:{port}/v1"), line
    finally:
        proc.terminate()
        proc.communicate(timeout=10)  # reaps it and closes its pipe


def test_mock_llm_stall_seconds_sets_how_long_a_timeout_fault_hangs(
    env: dict[str, str],
) -> None:
    import socket
    import time

    import httpx

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    proc = subprocess.Popen(
        [GATEWAY, "mock-llm", "--port", str(port), "--stall-seconds", "0.5"],
        env={**env, "PYTHONUNBUFFERED": "1"},
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline().startswith("mock LLM:")
        # The banner comes before the server listens: wait until it accepts a connection.
        deadline = time.monotonic() + 30
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                assert time.monotonic() < deadline, "the mock LLM did not start listening"
                time.sleep(0.05)
        body = {"model": "m", "messages": [{"role": "user", "content": "hi [[fault:timeout]]"}]}
        started = time.monotonic()
        r = httpx.post(f"http://127.0.0.1:{port}/v1/chat/completions", json=body, timeout=20)
        took = time.monotonic() - started
        assert r.status_code == 200 and 0.5 <= took < 10, (r.status_code, took)
    finally:
        proc.terminate()
        proc.communicate(timeout=10)
    refused = subprocess.run(
        [GATEWAY, "mock-llm", "--stall-seconds", "-1"], env=env, capture_output=True, text=True
    )
    assert refused.returncode == 2 and "stall-seconds" in refused.stderr


def test_serve_warns_that_workers_without_redis_multiply_the_limits(
    env: dict[str, str], tmp_path: Path
) -> None:
    env = {k: v for k, v in env.items() if k != "GATEWAY_REDIS_URL"}
    assert gateway(env, "db", "upgrade").returncode == 0
    with _serving(env, tmp_path / "two.log", workers=2):
        pass
    assert "2 workers without GATEWAY_REDIS_URL" in (tmp_path / "two.log").read_text()
    with _serving(env, tmp_path / "one.log"):
        pass
    assert "without GATEWAY_REDIS_URL" not in (tmp_path / "one.log").read_text()


def test_a_revision_or_setting_it_cannot_use_is_one_line_not_a_traceback(
    env: dict[str, str],
) -> None:
    from gateway.core.migrate import head_revision

    r = gateway(env, "db", "upgrade")
    assert r.returncode == 0 and r.stdout.strip() == f"database at {head_revision()}"
    for revision, says in (("0001", "past 0001"), ("bogus", "bogus")):
        # `upgrade` never goes back: it must not say it did (the database stays at head).
        r = gateway(env, "db", "upgrade", "--revision", revision)
        assert r.returncode == 1, r.stdout
        assert r.stderr.count("\n") == 1 and says in r.stderr, r.stderr
    assert gateway(env, "db", "wait", "--timeout", "1").returncode == 0

    for name, value in (
        ("GATEWAY_DEFAULT_TENANT_LIMITS", "{not json"),
        ("GATEWAY_DATABASE_URL", "postgresql://user:pw@127.0.0.1/x"),  # a sync driver
        ("GATEWAY_DATABASE_URL", "mysql://user:pw@127.0.0.1/x"),
        # Past their bounds' reach (inf > 0): every run was a 500, the TTL a crash at start.
        ("GATEWAY_UPSTREAM_TIMEOUT_S", "inf"),
        ("GATEWAY_LIMITS_LEASE_TTL_S", "inf"),
        # Not a Redis URL: a traceback at start (after `demo` printed its banner).
        ("GATEWAY_REDIS_URL", "http://user:pw@127.0.0.1:1/0"),
        ("GATEWAY_REDIS_URL", "redis://user:pw@127.0.0.1:99999/0"),  # a port no one has
        ("GATEWAY_LIMITS_LEASE_TTL_S", "1e300"),  # finite, but past what Redis can expire
    ):
        r = gateway({**env, name: value}, "db", "upgrade")
        assert r.returncode == 2, r.stdout
        assert r.stderr.count("\n") == 1 and "invalid settings" in r.stderr, r.stderr
        assert name in r.stderr, r.stderr  # the variable, as the docs name it
        assert value not in r.stderr and "pw" not in r.stderr

    # Valid JSON but not tenant limits: named by `tenants create`, not "Extra inputs are not
    # permitted" with no word of where they came from, and no tenant is made.
    bad = {**env, "GATEWAY_DEFAULT_TENANT_LIMITS": '{"requests_per_minutes": 5}'}
    r = gateway(bad, "tenants", "create", "--slug", "acme", "--name", "Acme")
    assert r.returncode == 2, r.stdout
    assert r.stderr.count("\n") == 1, r.stderr
    assert "GATEWAY_DEFAULT_TENANT_LIMITS: requests_per_minutes" in r.stderr, r.stderr
    r = gateway(env, "tenants", "create", "--slug", "acme", "--name", "Acme")
    assert r.returncode == 0, r.stderr


def test_an_admin_token_read_from_a_file_with_its_newline_still_matches() -> None:
    """`GATEWAY_ADMIN_TOKEN=$(cat file)` keeps no newline, but a secret mounted as an env
    file often does: the token is trimmed, or no admin call would ever match it; a token of
    spaces is none at all (production then refuses to start)."""
    from gateway.core.config import Settings

    token = "t" * 30
    assert Settings(admin_token=f"{token}\n", database_url="sqlite://").admin_token == token
    assert Settings(admin_token=" " * 30, database_url="sqlite://").admin_token == ""


@pytest.mark.parametrize(
    ("key", "base_url", "mock_url", "upstream", "spawns_mock"),
    [
        (None, None, None, None, True),  # development: `serve` runs the mock LLM itself
        (None, None, "http://mock:9100/v1", "http://mock:9100/v1", False),
        ("", "", "http://mock:9100/v1", "http://mock:9100/v1", False),  # empty is unset
        ("sk-real", "", "http://mock:9100/v1", None, False),  # a real key never goes to it
        (
            "sk-real",
            "https://llm.example/v1",
            "http://mock:9100/v1",
            "https://llm.example/v1",
            False,
        ),
        (None, "http://vllm:8000/v1", None, "http://vllm:8000/v1", False),
    ],
)
def test_which_upstream_the_deployment_uses(
    key: str | None, base_url: str | None, mock_url: str | None, upstream: str | None,
    spawns_mock: bool,
) -> None:  # fmt: skip
    settings = make_settings(
        "sqlite+aiosqlite://", openai_api_key=key, openai_base_url=base_url, mock_llm_url=mock_url
    )
    assert settings.upstream_base_url == upstream
    assert uses_mock(settings) is spawns_mock


@pytest.mark.parametrize(
    ("option", "value", "says"),
    [
        ("--fault-rate", "2", "fault_rate must be a probability"),
        ("--fault-rate", "nan", "fault_rate must be a probability"),
        ("--fault-status", "200", "fault_status must be an HTTP error status"),
        ("--latency-ms", "-5", "latency_ms must be a finite number"),
        ("--latency-ms", "inf", "latency_ms must be a finite number"),
        ("--stream-delay-ms", "nan", "stream_delay_ms must be a finite number"),
    ],
)
def test_mock_llm_refuses_knobs_that_would_test_nothing(
    env: dict[str, str], option: str, value: str, says: str
) -> None:
    """`--fault-status 200` injected no fault and `--fault-rate 2` is no probability: both
    started and quietly tested nothing."""
    done = subprocess.run(
        [GATEWAY, "mock-llm", "--port", "1", option, value],
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert done.returncode == 2, done.stderr
    assert says in done.stderr and "Traceback" not in done.stderr
