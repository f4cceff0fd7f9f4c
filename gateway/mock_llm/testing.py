"""Test helper: run the mock LLM as a real HTTP server on a free loopback port."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable

from .app import create_mock_app
from .config import MockConfig
from .server import uvicorn_options


def start_mock_server(
    config: MockConfig | None = None, host: str = "127.0.0.1"
) -> tuple[str, Callable[[], None]]:
    """Start the mock LLM with uvicorn in a background thread.

    Works from sync and async tests alike (the server has its own event loop).

    Args:
        config: Server-wide knobs; defaults to ``MockConfig()``.
        host: Loopback interface to bind (a free port is picked).

    Returns:
        ``(base_url, stop)`` where ``base_url`` is e.g. ``"http://127.0.0.1:54321/v1"``
        (ready for ``openai.AsyncOpenAI(base_url=...)``) and ``stop()`` shuts the server
        down and joins the thread.

    Raises:
        RuntimeError: If the server does not start within 10 seconds.
    """
    import uvicorn

    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, 0))
    port = sock.getsockname()[1]
    uv_config = uvicorn.Config(
        create_mock_app(config), timeout_graceful_shutdown=1, **uvicorn_options()
    )
    server = uvicorn.Server(uv_config)
    thread = threading.Thread(
        target=server.run, kwargs={"sockets": [sock]}, name=f"mock-llm-{port}", daemon=True
    )
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            server.should_exit = True
            sock.close()
            raise RuntimeError("mock LLM server failed to start")
        time.sleep(0.005)

    def stop() -> None:
        server.should_exit = True
        thread.join(5)
        if thread.is_alive():
            server.force_exit = True
            thread.join(5)
        sock.close()

    return f"http://{host}:{port}/v1", stop
