"""Serving and supervision: `gateway serve` and `gateway mock-llm`.

`serve` hands the process to `gateway.serving` (uvicorn with the JSON log config, proxy headers,
bounded heads and WebSocket frames, multiprocess metrics for several workers, a drain on
SIGTERM). In development without an upstream key it starts the built-in mock LLM as a child
process that exits with the gateway, and makes an admin token for the process tree.
"""

from __future__ import annotations

import os
import secrets
import socket
import subprocess
import sys
import time
import urllib.request
from typing import Annotated

import typer

from gateway.cli.options import Host, Port, fail
from gateway.core.allocator import apply_allocator
from gateway.core.config import Settings, get_settings


def mock_llm(
    host: Host = "127.0.0.1",
    port: Port = 9100,
    latency_ms: Annotated[float, typer.Option(help="Delay before each answer.")] = 0.0,
    stream_delay_ms: Annotated[float, typer.Option(help="Delay between stream chunks.")] = 0.0,
    fault_rate: Annotated[float, typer.Option(help="Share of requests that fail.")] = 0.0,
    fault_status: Annotated[int, typer.Option(help="Status of injected faults.")] = 500,
    stall_seconds: Annotated[
        float,
        typer.Option(
            min=0,
            help=(
                "How long the fault:timeout and fault:stall markers hang (more than the"
                " gateway's GATEWAY_UPSTREAM_TIMEOUT_S for a timeout)."
            ),
        ),
    ] = 30.0,
) -> None:
    """Serve the offline, deterministic OpenAI-compatible mock LLM."""
    from gateway.mock_llm import MockConfig, run_mock_server

    try:
        config = MockConfig(
            latency_ms=latency_ms,
            stream_delay_ms=stream_delay_ms,
            fault_rate=fault_rate,
            fault_status=fault_status,
            stall_seconds=stall_seconds,
        )
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from None
    require_free_port(host, port, "the mock LLM's")
    typer.echo(f"mock LLM: OPENAI_BASE_URL=http://{host}:{port}/v1 (Ctrl-C stops it)")
    run_mock_server(host, port, config)


def serve(
    host: Annotated[str, typer.Option(help="Interface to bind.", envvar="GATEWAY_HOST")] = (
        "127.0.0.1"
    ),
    port: Annotated[int, typer.Option(help="TCP port.", envvar="PORT", min=1, max=65535)] = 8000,
    workers: Annotated[
        int,
        typer.Option(
            help="Worker processes (about one per core).",
            envvar=["GATEWAY_WORKERS", "WEB_CONCURRENCY"],
            min=1,
        ),
    ] = 1,
    mock_port: Annotated[int, typer.Option(help="Port of the dev mock LLM.")] = 9100,
) -> None:
    """Serve the gateway (development without OPENAI_API_KEY: starts the mock LLM too)."""
    settings = get_settings()
    apply_allocator(settings)  # may re-execute this command under jemalloc
    if workers > 1 and not settings.redis_url:
        typer.echo(
            f"warning: {workers} workers without GATEWAY_REDIS_URL: each worker process keeps "
            "its own request limits, token quotas, concurrency caps and conversation locks, "
            f"so a tenant gets up to {workers} times its limits; set GATEWAY_REDIS_URL to "
            "share them",
            err=True,
        )
    mock = ensure_upstream(settings, mock_port)
    ensure_dev_admin_token(settings)
    try:
        run_uvicorn(host, port, workers)
    finally:
        if mock is not None:
            mock.terminate()


def run_uvicorn(host: str, port: int, workers: int) -> None:
    """Serve with uvicorn, draining on SIGTERM (`gateway.serving`); exit with its status."""
    from gateway.serving.run import serve

    status = serve(get_settings(), host, port, workers)
    if status != 0:
        raise typer.Exit(status)


def ensure_dev_admin_token(settings: Settings) -> str:
    """Development without GATEWAY_ADMIN_TOKEN: make one for this process tree."""
    if settings.admin_token:
        return settings.admin_token
    token = "dev-" + secrets.token_urlsafe(24)
    os.environ["GATEWAY_ADMIN_TOKEN"] = token
    get_settings.cache_clear()
    return token


def require_free_port(host: str, port: int, what: str) -> None:
    """Exit 1 with a clear message when `host:port` is taken (before anything is printed or
    started: a second server would answer in our place)."""
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn binds
        try:
            sock.bind((host, port))
        except OSError as exc:
            fail(
                f"{what} port {port} on {host} is not free ({exc.strerror}): choose another "
                "(make run PORT=… MOCK_PORT=…, or gateway demo --port … --mock-port …)"
            )


def uses_mock(settings: Settings) -> bool:
    """No upstream configured: `ensure_upstream` runs the mock LLM."""
    return settings.uses_mock_upstream and not settings.upstream_base_url


def ensure_upstream(
    settings: Settings, mock_port: int, tool_secret: str | None = None
) -> subprocess.Popen[bytes] | None:
    """No upstream key in development: run the built-in mock LLM and point the gateway at it
    (`tool_secret`: the demo tenant's tool-signing secret, which the mock's demo tool checks)."""
    if not uses_mock(settings):
        return None
    if settings.env != "development":
        fail("set OPENAI_API_KEY and/or OPENAI_BASE_URL (the mock LLM is for development only)")
    require_free_port("127.0.0.1", mock_port, "the mock LLM's")
    proc = subprocess.Popen(  # noqa: S603 (our own module, fixed arguments)
        [
            *(sys.executable, "-m", "gateway.mock_llm", "--port", str(mock_port)),
            *("--parent-pid", str(os.getpid())),  # it exits with us, even on SIGTERM/SIGKILL
        ],
        env={**os.environ, "MOCK_LLM_TOOL_SECRET": tool_secret or ""},
    )
    base_url = f"http://127.0.0.1:{mock_port}/v1"
    _wait_http(f"http://127.0.0.1:{mock_port}/healthz", proc)
    os.environ["OPENAI_BASE_URL"] = base_url
    os.environ.setdefault("OPENAI_API_KEY", "mock-key")
    get_settings.cache_clear()
    return proc


def _wait_http(url: str, proc: subprocess.Popen[bytes], timeout_s: float = 15.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            fail(f"mock LLM exited with {proc.returncode}")
        try:
            with urllib.request.urlopen(url, timeout=1):  # noqa: S310 (loopback URL we built)
                return
        except OSError:
            time.sleep(0.1)
    fail("mock LLM did not start")
