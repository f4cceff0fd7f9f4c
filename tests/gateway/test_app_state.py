"""The application state is one typed dataclass: every resource declared, none missing."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import pytest

from gateway.core.state import AppState
from tests.gateway.conftest import Gateway

ROOT = Path(__file__).resolve().parents[2]
# The assembly builds and installs the state; the server reads the drain before start-up.
OWNERS = {"gateway/app.py", "gateway/core/state.py", "gateway/serving/server.py"}


async def test_the_started_app_holds_every_declared_resource(gateway: Gateway) -> None:
    state = gateway.app.state
    assert isinstance(state, AppState)
    for field in dataclasses.fields(AppState):
        if field.name != "redis":  # embedded mode: no Redis
            assert getattr(state, field.name) is not None, field.name
    with pytest.raises(AttributeError):
        state.undeclared = 1  # type: ignore[attr-defined]


def test_routes_reach_the_state_through_dependencies_only() -> None:
    """No module outside the assembly reads `app.state` or falls back with getattr."""
    offenders = []
    for path in [*ROOT.glob("gateway/**/*.py"), *ROOT.glob("tenants/**/*.py")]:
        relative = path.relative_to(ROOT).as_posix()
        if relative in OWNERS:
            continue
        code = "\n".join(
            line for line in path.read_text().splitlines() if not line.lstrip().startswith("#")
        )
        if re.search(r"\.app\.state\b|getattr\([^)]*app\.state", code):
            offenders.append(relative)
    assert offenders == []
