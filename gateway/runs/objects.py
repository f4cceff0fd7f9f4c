"""The run object (`object: "agent.run"`) the runs API answers, from a run's state."""

from __future__ import annotations

from typing import Any

from gateway.core.clock import rfc3339
from gateway.runs.handle import RunHandle


def run_usage(handle: RunHandle) -> dict[str, int]:
    """The run's usage: this segment's, plus the earlier segments' of a resumed run."""
    usage = handle.meter.as_dict()
    if handle.prior_usage:
        for name, value in handle.prior_usage.items():
            usage[name] = usage.get(name, 0) + int(value)
    return usage


def run_object(handle: RunHandle, output: Any, status: str = "completed") -> dict[str, Any]:
    """The run object in `status` with `output`."""
    return {
        "id": handle.run_id,
        "object": "agent.run",
        "agent": handle.built.name,
        "status": status,
        "output": output,
        "conversation_id": None if handle.turn is None else handle.turn.conversation_id,
        "model": handle.built.model,
        "usage": run_usage(handle),
        "created_at": rfc3339(handle.run_created_at),
    }
