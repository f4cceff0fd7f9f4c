"""Run the mock LLM with uvicorn."""

from __future__ import annotations

import importlib.util
import os
import threading
import time
from typing import Any

from .app import create_mock_app
from .config import MockConfig

PARENT_POLL_S = 0.2


def uvicorn_options() -> dict[str, Any]:
    """Fastest available uvicorn settings: uvloop + httptools, quiet logs, no websockets."""
    has_uvloop = importlib.util.find_spec("uvloop") is not None
    has_httptools = importlib.util.find_spec("httptools") is not None
    return {
        "loop": "uvloop" if has_uvloop else "asyncio",
        "http": "httptools" if has_httptools else "h11",
        "ws": "none",
        "lifespan": "on",
        "access_log": False,
        "log_level": "warning",
    }


def run_mock_server(
    host: str = "127.0.0.1",
    port: int = 9100,
    config: MockConfig | None = None,
    parent_pid: int | None = None,
) -> None:
    """Serve the mock LLM until interrupted (blocking).

    Args:
        host: Interface to bind.
        port: TCP port to bind.
        config: Server-wide knobs; defaults to ``MockConfig()``.
        parent_pid: Shut down once this process (the one that started us) is gone, however
            it ended (even SIGKILL): `gateway serve`/`demo` never leave a mock LLM behind.
    """
    import uvicorn

    server = uvicorn.Server(
        uvicorn.Config(create_mock_app(config), host=host, port=port, **uvicorn_options())
    )
    if parent_pid is not None:
        threading.Thread(
            target=_exit_with_parent, args=(server, parent_pid), name="parent-watch", daemon=True
        ).start()
    server.run()


def _exit_with_parent(server: Any, parent_pid: int) -> None:
    """Poll the parent; when we are re-parented (it died), ask the server to shut down."""
    while os.getppid() == parent_pid:
        time.sleep(PARENT_POLL_S)
    server.should_exit = True
