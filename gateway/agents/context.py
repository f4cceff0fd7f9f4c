"""What a run hands to the code the SDK calls inside it (the run context of `Runner.run`)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from agents import RunConfig, RunHooks


@dataclass(frozen=True, slots=True)
class RunContext:
    """The run's own model access, for the small agents it runs inside itself (the input
    classifier): the same provider and config, and hooks that meter and reserve each model
    call into the run's usage."""

    run_config: RunConfig
    model_hooks: RunHooks[Any]
