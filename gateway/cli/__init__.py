"""The `gateway` command, split by job.

- `serve.py`: serving and supervision (`serve`, `mock-llm`): uvicorn configuration, the dev
  mock LLM as a child process, the development admin token.
- `demo.py`: `make run` (`demo`): migrate, seed the demo tenant, then serve.
- `operators.py`: operator commands that talk to the database through the control plane's
  services (`db`, `tenants`, `keys`, `agents`, `admin`, `prices`), for operators without curl.
- `main.py`: the Typer app that mounts them (the `gateway` entry point is `main`).
"""

from __future__ import annotations

from gateway.cli.main import app, main

__all__ = ["app", "main"]
