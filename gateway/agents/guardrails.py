"""An agent's guardrails, compiled once with the built agent.

- `InputChecks` / `PatternSet`: the checks the gateway does itself, with no model call:
  `input.max_chars` and `input.blocked_patterns` before the run's first model call,
  `output.blocked_patterns` on the final answer before it is returned. All patterns of one
  list are one RE2 set, matched in a single linear-time pass whatever their number. Linear
  is not cheap: a set whose DFA explodes (`[ab]*a[ab]{40}c`, 32 of them) costs about 20 µs a
  character, seconds on a long input. A text longer than `INLINE_CHARS` is matched on a
  thread of the guardrails' own pool (RE2 releases the GIL), so the event loop, and every
  other request of the worker, goes on meanwhile; and in its tenant's lane: one long match
  per tenant at a time, so a tenant's costly set queues its own checks, never another
  tenant's (the pool has a thread for each of `LANE_THREADS` tenants at once).
- `classifier_guardrail`: `input.classifier`, a small agent run as an SDK input guardrail
  that *blocks* (runs before the main agent, not in parallel with it): a tripped input never
  reaches the main agent's model or its tools, and costs one classifier call only (see
  docs/composition.md for the latency this costs). Its model calls are metered into the
  run through the hooks of `gateway.agents.context.CURRENT_RUN`.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from agents import (
    Agent,
    GuardrailFunctionOutput,
    InputGuardrail,
    ModelSettings,
    RunContextWrapper,
    Runner,
)
from agents.items import TResponseInputItem

from gateway.agents.context import CURRENT_RUN
from gateway.agents.output import InvalidModelOutput, JsonSchemaOutput
from gateway.core.errors import GuardrailTriggeredError, UpstreamError
from gateway.core.linear_regex import compile_set
from observability.metrics import record_guardrail
from tenants.agent.composition import ClassifierSpec

CLASSIFIER_GUARDRAIL = "input.classifier"
VERDICT_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {"tripwire": {"type": "boolean"}, "reason": {"type": "string"}},
    "required": ["tripwire", "reason"],
    "additionalProperties": False,
}
"""What the classifier answers: `{"tripwire": true, "reason": "…"}` trips the guardrail."""


INLINE_CHARS = 4096
"""Texts up to this length are matched on the event loop (well under a millisecond even for a
costly set; a thread handoff would cost more); longer ones on `MATCHERS`."""
LANE_THREADS = 4
MATCHERS = ThreadPoolExecutor(max_workers=LANE_THREADS, thread_name_prefix="guardrail-re2")
"""The threads long texts are matched on: their own pool, so that costly matches queue here
rather than in the loop's default executor (DNS lookups of tools and upstreams)."""

_LANES: dict[tuple[int, str], tuple[asyncio.Lock, int]] = {}
"""(event loop, tenant) -> the lane's lock and how many checks hold or wait for it; an entry
lives while it has users (so no lock outlives its loop)."""


async def match_in_lane(lane: str, match: Callable[[str], int | None], text: str) -> int | None:
    """`match(text)` on a `MATCHERS` thread, after the lane's earlier long matches. The lane is
    held until the thread is done, even when the waiting request is cancelled (the thread
    cannot be stopped: a client that leaves does not get its tenant a second thread)."""
    loop = asyncio.get_running_loop()
    key = (id(loop), lane)
    lock, users = _LANES.get(key, (None, 0))
    if lock is None:
        lock = asyncio.Lock()
    _LANES[key] = (lock, users + 1)

    def leave() -> None:
        held, count = _LANES[key]
        if count <= 1:
            del _LANES[key]
        else:
            _LANES[key] = (held, count - 1)

    try:
        await lock.acquire()
    except BaseException:
        leave()
        raise
    try:
        matching = loop.run_in_executor(MATCHERS, match, text)
    except BaseException:  # the pool is shut down (the process is ending)
        lock.release()
        leave()
        raise

    def done(_: object) -> None:
        lock.release()
        leave()

    matching.add_done_callback(done)
    return await asyncio.shield(matching)


class PatternSet:
    """One list of blocked patterns (`input.blocked_patterns`, ...) as one RE2 set."""

    __slots__ = ("_set", "param")

    def __init__(self, param: str, patterns: Sequence[str]) -> None:
        self.param = param
        self._set = compile_set(patterns)

    def first_match(self, text: str) -> int | None:
        """The index of the first pattern found in `text`, or None."""
        found = self._set.Match(text)
        return min(found) if found else None

    async def matches(self, text: str, *, lane: str = "") -> bool:
        """Whether a pattern is found in `text` (a long text is matched off the event loop)."""
        if len(text) <= INLINE_CHARS:
            return self.first_match(text) is not None
        return await match_in_lane(lane, self.first_match, text) is not None

    async def check(self, text: str, where: str = "", *, lane: str = "") -> None:
        """Raise `GuardrailTriggeredError` if a pattern is found in `text` (a long text is
        matched off the event loop, in `lane`: the tenant's)."""
        if len(text) <= INLINE_CHARS:
            index = self.first_match(text)
        else:
            index = await match_in_lane(lane, self.first_match, text)
        if index is not None:
            param = f"{self.param}[{index}]"
            raise GuardrailTriggeredError(param, f"The {where}matched the guardrail {param}.")


def patterns_or_none(param: str, patterns: Sequence[str]) -> PatternSet | None:
    return PatternSet(param, patterns) if patterns else None


class InputChecks:
    """`input.max_chars` and `input.blocked_patterns`, on what the caller sent for this run."""

    __slots__ = ("max_chars", "patterns")

    def __init__(self, max_chars: int | None, patterns: PatternSet | None) -> None:
        self.max_chars = max_chars
        self.patterns = patterns

    async def check(self, request_input: str | list[Any], *, lane: str = "") -> None:
        texts = input_texts(request_input)
        if self.max_chars is not None:
            chars = sum(len(text) for text in texts)
            if chars > self.max_chars:
                raise GuardrailTriggeredError(
                    "input.max_chars",
                    f"The input has {chars} characters; this agent accepts at most "
                    f"{self.max_chars} (guardrail input.max_chars).",
                )
        if self.patterns is not None:
            text = texts[0] if len(texts) == 1 else "\n".join(texts)
            await self.patterns.check(text, "input ", lane=lane)


def input_texts(request_input: str | list[Any]) -> list[str]:
    """The text of each message of a run's input."""
    if isinstance(request_input, str):
        return [request_input]
    texts: list[str] = []
    for item in request_input:
        content = item.get("content") if isinstance(item, dict) else None
        if isinstance(content, str):
            texts.append(content)
        elif isinstance(content, list):
            texts.extend(p["text"] for p in content if isinstance(p.get("text"), str))
    return texts


def classifier_guardrail(
    agent_name: str, spec: ClassifierSpec, *, default_model: str
) -> InputGuardrail[Any]:
    """The `input.classifier` guardrail: a one-call agent answering a verdict."""
    classifier: Agent[Any] = Agent(
        name=f"{agent_name}-classifier",
        instructions=spec.instructions,
        model=spec.model or default_model,
        output_type=JsonSchemaOutput(VERDICT_SCHEMA),
        model_settings=ModelSettings(include_usage=True),
    )

    async def classify(
        context: RunContextWrapper[Any],
        agent: Agent[Any],
        run_input: str | list[TResponseInputItem],
    ) -> GuardrailFunctionOutput:
        run = CURRENT_RUN.get()
        if run is None:
            raise RuntimeError("the classifier runs inside a gateway run")
        try:
            result = await Runner.run(
                classifier,
                run_input,
                max_turns=1,
                hooks=run.model_hooks,
                run_config=run.run_config,
            )
        except InvalidModelOutput as exc:
            raise UpstreamError(
                f"The input classifier did not answer a verdict: {exc.message}.",
                code="invalid_classifier_output",
            ) from exc
        verdict = result.final_output
        triggered = verdict.get("tripwire") is True
        record_guardrail(run.tenant, triggered=triggered)
        return GuardrailFunctionOutput(output_info=verdict, tripwire_triggered=triggered)

    return InputGuardrail(
        guardrail_function=classify, name=CLASSIFIER_GUARDRAIL, run_in_parallel=False
    )
