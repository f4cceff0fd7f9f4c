"""Per-run usage metering and quota reservations through `RunHooks`.

`on_llm_start` fires before every model call: the run's ticket reserves the call's estimated
input plus its max output there (an exception raised there stops the run before the call);
the first call's reservation is made at admission from `first_call_estimate`, and used when
the real estimate is not larger.
`on_llm_end` fires after every successful model call: its usage is summed (so the tokens of a
run that later fails, times out or is cancelled are still known) and the reservation settles
to it. The run's usage is the sum over its calls.
Each call is also timed from `on_llm_start` to `on_llm_end` for the model-latency metric; a
call the run ended without (`end_calls`: an upstream error, a timeout, a cancellation) counts
as `cancelled` (counted and timed) unless an upstream failure counted it. Handoffs are counted
in `on_handoff`.

A call is priced at its own model's price: a handoff target or an input classifier on another
model than the run's reserves and settles spend at that model's price, and its tokens are
kept apart per model (`model_usage()`), so the record is priced per model and the token
metrics count each model's own tokens.

A streamed run whose client left during a model call is wound down (`stop_after_call`): once
the upstream answers, that call is read to its end, so its usage is recorded as the upstream
reported it, and `ClientGone` is raised from its `on_llm_end` (before any tool of the answer
runs) or from the next `on_llm_start` (no further call is made).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import orjson
from agents import (
    Agent,
    AgentOutputSchemaBase,
    FunctionTool,
    Handoff,
    ItemHelpers,
    RunContextWrapper,
    RunHooks,
)
from agents.exceptions import AgentsException
from agents.items import ModelResponse, ToolApprovalItem, TResponseInputItem
from agents.usage import Usage

from gateway.limits.prices import cost_micro
from gateway.limits.quotas import RunTicket
from observability.metrics import UPSTREAM_REQUESTS, record_handoff, record_model_call
from tenants.price.pricing import Price

CANCELLED = "cancelled"
"""The upstream status of a model call the run ended without an answer or an upstream failure."""

# Real tokenizers average about 4 characters per token on text and JSON; dividing by 3 and
# adding a margin makes the estimate an upper bound for ordinary input (and for the mock LLM,
# which counts characters / 4). See docs/limits.md for what an underestimate costs.
CHARS_PER_TOKEN = 3
ESTIMATE_MARGIN = 16


_TOOL_CHARS: dict[int, tuple[Agent[Any], int]] = {}


def tool_chars(agent: Agent[Any]) -> int:
    """Characters the agent's tool definitions add to every model call (cached per agent
    object: built agents are cached and immutable)."""
    hit = _TOOL_CHARS.get(id(agent))
    if hit is not None and hit[0] is agent:
        return hit[1]
    if len(_TOOL_CHARS) >= 1024:
        _TOOL_CHARS.clear()
    total = _count_tool_chars(agent)
    _TOOL_CHARS[id(agent)] = (agent, total)
    return total


def _count_tool_chars(agent: Agent[Any]) -> int:
    """Tools, handoff tools and the output schema: what every model call of the agent sends
    beside the instructions and the conversation."""
    total = 0
    for tool in agent.tools:
        if isinstance(tool, FunctionTool):
            total += len(tool.name) + len(tool.description or "")
            total += len(orjson.dumps(tool.params_json_schema))
        else:
            total += 256
    for item in agent.handoffs:
        if isinstance(item, Handoff):
            total += len(item.tool_name) + len(item.tool_description)
            total += len(orjson.dumps(item.input_json_schema))
        else:
            total += 256
    output_type = agent.output_type
    if isinstance(output_type, AgentOutputSchemaBase) and not output_type.is_plain_text():
        total += len(orjson.dumps(output_type.json_schema()))
    return total


def estimate_input_tokens(
    system_prompt: str | None, input_items: list[TResponseInputItem], tools_chars: int
) -> int:
    """An upper estimate of a model call's input tokens, from its characters."""
    chars = len(system_prompt or "") + len(orjson.dumps(input_items, default=str)) + tools_chars
    return chars // CHARS_PER_TOKEN + ESTIMATE_MARGIN


def first_call_estimate(agent: Agent[Any], sdk_input: str | list[Any]) -> int | None:
    """The input estimate of a run's first model call, known before the run starts (None when
    the instructions are dynamic). `on_llm_start` checks it against the real estimate."""
    if not isinstance(agent.instructions, str | None):
        return None
    items = ItemHelpers.input_to_new_input_list(sdk_input)
    return estimate_input_tokens(agent.instructions, items, tool_chars(agent))


def resume_estimate(agent: Agent[Any], state: Any) -> int | None:
    """The input estimate of a resumed segment's first model call: the run's input and the
    items it generated before it paused (the approved calls' outputs are not known yet: if
    they grow the call, `on_llm_start` reserves it anew). None when it cannot be known."""
    original = getattr(state, "_original_input", None)
    generated = getattr(state, "_generated_items", None)
    if original is None or generated is None or not isinstance(agent.instructions, str | None):
        return None
    items = ItemHelpers.input_to_new_input_list(original)
    for item in generated:
        # What the model will be sent: an approval request, say, is not an input item.
        if isinstance(item, ToolApprovalItem):
            continue
        try:
            items.append(item.to_input_item())
        except AgentsException:
            continue
    return estimate_input_tokens(agent.instructions, items, tool_chars(agent))


@dataclass(slots=True)
class ModelTokens:
    """What one model's calls of a run used."""

    requests: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    cached_tokens: int = 0
    reasoning_tokens: int = 0
    total_tokens: int = 0

    def add(self, usage: Usage) -> None:
        """Count one model call's usage as the upstream reported it."""
        self.requests += usage.requests
        self.input_tokens += usage.input_tokens
        self.output_tokens += usage.output_tokens
        self.total_tokens += usage.total_tokens
        self.cached_tokens += usage.input_tokens_details.cached_tokens or 0
        self.reasoning_tokens += usage.output_tokens_details.reasoning_tokens or 0

    def minus(self, other: ModelTokens) -> ModelTokens:
        """These counters less `other`'s."""
        return ModelTokens(
            self.requests - other.requests,
            self.input_tokens - other.input_tokens,
            self.output_tokens - other.output_tokens,
            self.cached_tokens - other.cached_tokens,
            self.reasoning_tokens - other.reasoning_tokens,
            self.total_tokens - other.total_tokens,
        )

    def as_dict(self) -> dict[str, int]:
        return {
            "requests": self.requests,
            "input_tokens": self.input_tokens,
            "output_tokens": self.output_tokens,
            "cached_tokens": self.cached_tokens,
            "reasoning_tokens": self.reasoning_tokens,
            "total_tokens": self.total_tokens,
        }


class ClientGone(Exception):
    """The client of a streamed run left: the run stops after the call it was answering."""


class RunMeter(RunHooks[Any]):
    """Sums what the upstream reported for each model call of one run; reserves before each."""

    def __init__(
        self,
        model: str,
        ticket: RunTicket | None = None,
        max_output: int | None = None,
        tenant: str = "",
        price_of: Callable[[str], Price | None] | None = None,
    ) -> None:
        self.model = model
        self.tenant = tenant
        self.price_of = price_of
        """Another model's price in force when the run started (None: every call is priced
        at the ticket's price)."""
        self._calls: dict[int, tuple[float, str, Price | None]] = {}
        """Calls in flight: id(agent) -> (start, model name, the price it reserved at)."""
        self.others: dict[str, ModelTokens] | None = None
        """What calls to models other than `model` used (None: there were none)."""
        self.ticket = ticket
        self.max_output = max_output
        self.total = ModelTokens()
        """What every model call of the run used (the run's usage)."""
        self.stopping = False
        """The run stops after the call in flight (`stop_after_call`)."""
        self.cancelled = False
        """The run is being cancelled with no call in flight: none may start."""
        self.last_call_cut = False
        """The run's latest model call used all of its output limit (`max_tokens`): its
        answer was cut there (Chat Completions' `finish_reason: "length"`)."""
        self.failed_status = CANCELLED
        """The status of a call the run ended without: the upstream's failure (`timeout`,
        `429`, `unreachable`, `bad_response`, ...) when it is known (counted where it was
        mapped), else `cancelled` (the client left, the run's deadline, the drain)."""

    def stop_after_call(self) -> bool:
        """Wind the run down if a model call is in flight: that call is read to its end and
        metered, then the run stops (`ClientGone`); how long it may take is the caller's
        (the disconnect grace). False when no call is in flight: the caller cancels the run at
        once, and no call starts meanwhile (the SDK runs a streamed run in a task of its own,
        which may reach its next call before it sees the cancellation: that call would reach
        the upstream, which bills it, and never be metered)."""
        self.stopping = True
        if self._calls:
            return True
        self.cancelled = True
        return False

    async def on_llm_start(
        self,
        context: RunContextWrapper[Any],
        agent: Agent[Any],
        system_prompt: str | None,
        input_items: list[TResponseInputItem],
    ) -> None:
        self._refuse_a_call()
        ticket = self.ticket
        model = _model_name(agent)
        price: Price | None = None
        if ticket is not None and ticket.limits.metered:
            price = self._price(ticket, model)
            estimate = estimate_input_tokens(system_prompt, input_items, tool_chars(agent))
            # A handoff target or the input classifier may have its own output limit.
            await ticket.before_call(
                estimate, agent.model_settings.max_tokens or self.max_output, price
            )
            self._refuse_a_call()  # the client left while it was reserved (settles to 0)
        # Timed once admitted (a refused reservation makes no call).
        self._calls[id(agent)] = (time.perf_counter(), model, price)

    def _refuse_a_call(self) -> None:
        """No call starts once the client has left. A cancelled run ends as cancelled: the
        SDK's own task (a streamed run's) is being cancelled, and a `ClientGone` raised in it
        first would end it with an exception nobody reads, logged as an error."""
        if self.cancelled:
            raise asyncio.CancelledError
        if self.stopping:
            raise ClientGone

    def _price(self, ticket: RunTicket, model: str) -> Price | None:
        """The price a call to `model` reserves and settles spend at."""
        if model == self.model or self.price_of is None or not ticket.limits.spend_metered:
            return ticket.price
        return self.price_of(model)

    async def on_llm_end(
        self, context: RunContextWrapper[Any], agent: Agent[Any], response: ModelResponse
    ) -> None:
        ticket = self.ticket
        call = self._calls.pop(id(agent), None)
        if call is None:  # not started through this meter: the run's own model
            model, price = self.model, None if ticket is None else ticket.price
        else:
            model, price = call[1], call[2]
            record_model_call(model, status="ok", seconds=time.perf_counter() - call[0])
        usage = response.usage
        self.total.add(usage)
        limit = agent.model_settings.max_tokens or self.max_output
        self.last_call_cut = limit is not None and usage.output_tokens >= limit
        if model != self.model:
            if self.others is None:
                self.others = {}
            other = self.others.get(model)
            if other is None:
                other = self.others[model] = ModelTokens()
            other.add(usage)
        UPSTREAM_REQUESTS.labels(model, "ok").inc()
        if ticket is not None:
            spent = 0
            if price is not None:
                spent = cost_micro(
                    price,
                    usage.input_tokens,
                    usage.output_tokens,
                    usage.input_tokens_details.cached_tokens or 0,
                    usage.output_tokens_details.reasoning_tokens or 0,
                )
            await ticket.after_call(usage.total_tokens, spent)
        if self.stopping:
            raise ClientGone

    async def on_agent_end(
        self, context: RunContextWrapper[Any], agent: Agent[Any], output: Any
    ) -> None:
        """The final output is known: no model call follows, so the release (last settlement
        and the lease) is sent now, its round trip hidden by the SDK's wrap-up of the run
        (~0.35 ms) instead of added after it. `RunHandle.finish` awaits it."""
        ticket = self.ticket
        if ticket is not None and ticket.limits.any and ticket.closing is None:
            ticket.begin_close()
            await asyncio.sleep(0)  # the task runs up to its first wait: the command is sent

    async def on_handoff(
        self, context: RunContextWrapper[Any], from_agent: Agent[Any], to_agent: Agent[Any]
    ) -> None:
        record_handoff(self.tenant)

    def end_calls(self) -> None:
        """The run ended: a call still in flight never answered (timed with `failed_status`)."""
        now = time.perf_counter()
        for started, model, _ in self._calls.values():
            if self.failed_status == CANCELLED:  # no upstream verdict counted it yet
                UPSTREAM_REQUESTS.labels(model, CANCELLED).inc()
            record_model_call(model, status=self.failed_status, seconds=now - started)
        self._calls.clear()

    def own_tokens(self) -> ModelTokens:
        """What the calls to the run's own model used (the run's totals less the others')."""
        own = self.total
        for other in (self.others or {}).values():
            own = own.minus(other)
        return own

    def by_model(self) -> dict[str, ModelTokens]:
        """What each model the run called used (the run's own model first, when called)."""
        own = self.own_tokens()
        models = {self.model: own} if own.requests or not self.others else {}
        models.update(self.others or {})
        return models

    def model_usage(self) -> dict[str, dict[str, int]] | None:
        """The usage record's per-model breakdown: None when every call went to the run's
        own model (the record's totals are that model's)."""
        if not self.others:
            return None
        return {model: tokens.as_dict() for model, tokens in self.by_model().items()}

    def model_hooks(self) -> ModelCallHooks:
        """Hooks for the runs a run makes inside itself (its input classifier): their model
        calls are reserved and counted here, but their end is not the run's end."""
        return ModelCallHooks(self)

    def as_dict(self) -> dict[str, int]:
        """The `usage` object of the run response."""
        total = self.total
        return {
            "requests": total.requests,
            "input_tokens": total.input_tokens,
            "output_tokens": total.output_tokens,
            "total_tokens": total.total_tokens,
        }


class ModelCallHooks(RunHooks[Any]):
    """Forwards only the model-call hooks to a run's meter."""

    def __init__(self, meter: RunMeter) -> None:
        self.meter = meter

    async def on_llm_start(
        self,
        context: RunContextWrapper[Any],
        agent: Agent[Any],
        system_prompt: str | None,
        input_items: list[TResponseInputItem],
    ) -> None:
        await self.meter.on_llm_start(context, agent, system_prompt, input_items)

    async def on_llm_end(
        self, context: RunContextWrapper[Any], agent: Agent[Any], response: ModelResponse
    ) -> None:
        await self.meter.on_llm_end(context, agent, response)


def _model_name(agent: Agent[Any]) -> str:
    """The model an agent calls, as its spec names it (a `Model` object: its `model`)."""
    model = agent.model
    if isinstance(model, str):
        return model
    return str(getattr(model, "model", None) or "unknown")
