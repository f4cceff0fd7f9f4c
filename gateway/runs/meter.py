"""Per-run usage metering through `RunHooks.on_llm_end`.

The hook fires after every successful model call, so the tokens of a run that later fails,
times out or is cancelled are still known. The run's usage is the sum over its calls.
"""

from __future__ import annotations

from typing import Any

from agents import Agent, RunContextWrapper, RunHooks
from agents.items import ModelResponse

from observability.metrics import UPSTREAM_REQUESTS


class RunMeter(RunHooks[Any]):
    """Sums what the upstream reported for each model call of one run."""

    def __init__(self, model: str) -> None:
        self.model = model
        self.requests = 0
        self.input_tokens = 0
        self.output_tokens = 0
        self.cached_tokens = 0
        self.reasoning_tokens = 0
        self.total_tokens = 0

    async def on_llm_end(
        self, context: RunContextWrapper[Any], agent: Agent[Any], response: ModelResponse
    ) -> None:
        usage = response.usage
        self.requests += usage.requests
        self.input_tokens += usage.input_tokens
        self.output_tokens += usage.output_tokens
        self.total_tokens += usage.total_tokens
        self.cached_tokens += usage.input_tokens_details.cached_tokens or 0
        self.reasoning_tokens += usage.output_tokens_details.reasoning_tokens or 0
        UPSTREAM_REQUESTS.labels(self.model, "ok").inc()

    def as_dict(self) -> dict[str, int]:
        """The `usage` object of the run response."""
        return {
            "requests": self.requests,
            "input_tokens": self.input_tokens,
            "output_tokens": self.output_tokens,
            "total_tokens": self.total_tokens,
        }
