"""A stored version written under older rules still loads; a PUT is held to today's."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from tenants.agent.spec import AgentSpec, stored_spec

# Accepted by the PUT before 2026-12-07: a duplicate allowed tool, spaces around URLs, and a
# guardrail list RE2 cannot compile as one set.
OLDER: dict[str, Any] = {
    "instructions": "x",
    "model": "m",
    "tools": [
        {
            "type": "mcp",
            "name": "crm",
            "url": "https://mcp.example.com/mcp ",
            "allowed_tools": ["find", "find"],
        },
        {"type": "http", "name": "lookup", "url": " https://tools.example.com/lookup"},
    ],
    "guardrails": {"input": {"blocked_patterns": [r"\p{L}{200}"]}},
}


def test_a_put_is_held_to_todays_rules() -> None:
    with pytest.raises(ValidationError) as refused:
        AgentSpec.model_validate(OLDER)
    where = {".".join(str(part) for part in error["loc"]) for error in refused.value.errors()}
    assert where == {
        "tools.0.<mcp>.url",
        "tools.0.<mcp>.allowed_tools",
        "tools.1.<http>.url",
        "guardrails.input.blocked_patterns",
    }


def test_a_stored_version_under_older_rules_still_loads() -> None:
    """An upgrade never turns a working agent into a 500 (GET /v1/agents, its runs, the
    handoff checks of its callers all read it back)."""
    spec = stored_spec(OLDER)
    assert spec.mcp_tools()[0].allowed_tools == ["find", "find"]
    assert spec.http_tools()[0].url == " https://tools.example.com/lookup"


def test_rules_as_old_as_the_store_still_hold_for_it() -> None:
    with pytest.raises(ValidationError):
        stored_spec({**OLDER, "model": "m\x00"})  # never storable
