"""What a run tells its tools: which run, agent, tenant and end user a call is made for.

It travels as the SDK run context, a plain dict (so a paused run's serialised state keeps it),
built by `run_context` and read back by `context_of`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from agents import RunContextWrapper


@dataclass(frozen=True, slots=True)
class RunToolContext:
    run_id: str
    agent: str
    tenant_id: str
    user: str | None


def run_context(run_id: str, agent: str, tenant_id: str, user: str | None) -> dict[str, Any]:
    """The SDK context of a run."""
    return {"run_id": run_id, "agent": agent, "tenant_id": tenant_id, "user": user}


def context_of(wrapper: RunContextWrapper[Any]) -> RunToolContext:
    """The run a tool call belongs to."""
    data = wrapper.context
    if not isinstance(data, dict):
        raise TypeError("the run was started without its tool context")
    return RunToolContext(
        run_id=str(data["run_id"]),
        agent=str(data["agent"]),
        tenant_id=str(data["tenant_id"]),
        user=data.get("user"),
    )
