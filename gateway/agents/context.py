"""The run in progress, for the small agents a run makes inside itself (its input classifier).

Held in a context variable rather than the SDK run context: the run context is what a run's
tools see (and what a paused run serialises), while this holds live objects: the run's
provider config and the hooks that meter and reserve each model call into the run's usage.
The SDK starts guardrails in tasks, which copy the context variables of the run's task.
"""

from __future__ import annotations

from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any

from agents import RunConfig, RunHooks


@dataclass(frozen=True, slots=True)
class RunScope:
    """The run's own model access: the same provider and config, and its meter's hooks."""

    run_config: RunConfig
    model_hooks: RunHooks[Any]
    tenant: str
    """The run's tenant slug (for the guardrail metric)."""


CURRENT_RUN: ContextVar[RunScope | None] = ContextVar("gateway_current_run", default=None)
"""Set by a run whose agent has an input classifier, before the SDK run starts."""
