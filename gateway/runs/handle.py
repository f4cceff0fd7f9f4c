"""`RunHandle`: the state of one run in progress, and nothing else.

What the run is (agent, model client, principal), where it stands (its meter, ticket, deadline,
the conversation turn it continues, a resumed run's earlier segments) and what it started
from. Opening, executing and settling a run are `gateway.runs.lifecycle.Run`'s job; rendering
it is `gateway.runs.objects`'; checking its input and answer is `gateway.runs.checks`'.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from agents import RunState
from agents.models.openai_provider import OpenAIProvider

from gateway.agents.builder import BuiltAgent
from gateway.auth.principal import Principal
from gateway.conversations.service import Turn
from gateway.core.clock import utcnow
from gateway.core.ids import new_id
from gateway.limits.quotas import RunTicket
from gateway.runs.meter import RunMeter
from tenants.price.pricing import Price


@dataclass(slots=True, eq=False)
class RunHandle:
    """One run in progress: what it runs, for whom, and its meter."""

    principal: Principal
    built: BuiltAgent
    provider: OpenAIProvider
    run_id: str = field(default_factory=lambda: new_id("run"))
    created_at: datetime = field(default_factory=utcnow)
    started: float = field(default_factory=time.perf_counter)
    ticket: RunTicket | None = None
    """The admission's reservations and concurrency lease (None when no limit applies)."""
    meter: RunMeter = field(init=False)
    turn: Turn | None = None
    """The conversation turn this run continues (`conversation_id`), if any."""
    segment: int = 0
    """0 for a new run; n for the n-th resume of a paused run (its own usage record)."""
    first_created_at: datetime | None = None
    """When a resumed run started (its first segment); None for a new run."""
    prior_usage: dict[str, int] | None = None
    """What the run's earlier segments used (a resumed run's object shows the run's total)."""
    history_items: int | None = None
    """Conversation items before the paused turn's input (a resumed turn's append skips them)."""
    resume_state: RunState[Any, Any] | None = None
    """A resumed run's SDK state, the decisions applied: what the run continues from."""
    request_input: str | list[Any] | None = None
    """What the caller sent for this run (without a conversation's history): what the input
    guardrails check."""
    price: Price | None = None
    """The model's price in force when the run started (None: unpriced), for the spend
    metric; the usage writer prices the record itself, exactly."""
    price_of: Callable[[str], Price | None] | None = None
    """Any model's price in force when the run started: what a call to a handoff target or
    an input classifier on another model is reserved at, and its spend metric."""
    deadline: float = math.inf
    """Event-loop time by which the run must end (`GATEWAY_RUN_TIMEOUT_S` after admission)."""
    timeout_s: float = math.inf

    @property
    def run_created_at(self) -> datetime:
        """When the run started: its `created_at` in every run object, whatever the segment
        (`created_at` is this segment's start, which prices it)."""
        return self.first_created_at or self.created_at

    def __post_init__(self) -> None:
        self.meter = RunMeter(
            self.built.model,
            self.ticket,
            self.built.max_tokens,
            tenant=self.principal.tenant_slug,
            price_of=self.price_of,
        )
