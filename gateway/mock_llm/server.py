"""Run the mock LLM with uvicorn."""

from __future__ import annotations

import importlib.util
from typing import Any

from .app import create_mock_app
from .config import MockConfig


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
    host: str = "127.0.0.1", port: int = 9100, config: MockConfig | None = None
) -> None:
    """Serve the mock LLM until interrupted (blocking).

    Args:
        host: Interface to bind.
        port: TCP port to bind.
        config: Server-wide knobs; defaults to ``MockConfig()``.
    """
    import uvicorn

    uvicorn.run(create_mock_app(config), host=host, port=port, **uvicorn_options())
