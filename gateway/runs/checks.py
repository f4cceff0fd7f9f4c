"""The gateway's own guardrails on a run: its input before any model call, its answer before
it is returned (each counted in `gateway_guardrails_total`)."""

from __future__ import annotations

from typing import Any

import orjson
from agents.items import ItemHelpers, MessageOutputItem
from agents.result import RunResultBase

from gateway.core.errors import GuardrailTriggeredError
from gateway.runs.handle import RunHandle
from observability.metrics import record_guardrail


async def check_input(handle: RunHandle) -> None:
    """`input` checks of the agent on what the caller sent (400 when tripped)."""
    checks = handle.built.input_checks
    if checks is not None and handle.request_input is not None:
        try:
            await checks.check(handle.request_input, lane=handle.principal.tenant_id)
        except GuardrailTriggeredError:
            record_guardrail(handle.principal.tenant_slug, triggered=True)
            raise
        record_guardrail(handle.principal.tenant_slug, triggered=False)


async def check_output(handle: RunHandle, result: RunResultBase) -> None:
    """`output.blocked_patterns` of the entry agent, and of the agent that answered when a
    handoff made it another one, on the final answer before it is returned."""
    checks = handle.built.output_checks
    if not checks:
        return
    name = handle.built.name
    texts = checked_texts(result.final_output)
    if not isinstance(result.final_output, str) and (raw := model_text(result)) is not None:
        texts.append(raw)  # structured: the model's own text too (what a stream sends)
    answered = result.last_agent.name
    lane = handle.principal.tenant_id
    try:
        if (entry := checks.get(name)) is not None:
            for text in texts:
                await entry.check(text, "answer ", lane=lane)
        if answered != name and (last := checks.get(answered)) is not None:
            for text in texts:
                await last.check(text, f"answer of agent '{answered}' ", lane=lane)
    except GuardrailTriggeredError:
        record_guardrail(handle.principal.tenant_slug, triggered=True)
        raise
    record_guardrail(handle.principal.tenant_slug, triggered=False)


async def stored_items(handle: RunHandle, result: RunResultBase) -> list[Any]:
    """The turn's items to store in its conversation: with output patterns, without the text
    the model wrote beside a tool call or a handoff (a message before the final answer) when
    it trips a pattern of any agent of the run. Only the final answer was checked before the
    run answered; the conversation's items are readable by the client, so blocked text must
    not reach them either. The final answer, which passed, is always kept."""
    assert handle.turn is not None
    items = handle.turn.new_items(result, skip=handle.history_items)
    checks = handle.built.output_checks
    if not checks:
        return items
    messages = [i for i, item in enumerate(items) if assistant_text(item) is not None]
    final = messages[-1] if messages else None
    lane = handle.principal.tenant_id
    kept = []
    for index, item in enumerate(items):
        text = assistant_text(item)
        blocked = index != final and bool(text)
        if blocked:
            blocked = any([await p.matches(text or "", lane=lane) for p in checks.values()])
        if not blocked:
            kept.append(item)
    return kept


def assistant_text(item: Any) -> str | None:
    """The text of an assistant message item (None for any other item)."""
    if not isinstance(item, dict) or item.get("role") != "assistant":
        return None
    if item.get("type", "message") != "message":
        return None
    content = item.get("content")
    if isinstance(content, str):
        return content
    if not isinstance(content, list):
        return None
    return "".join(str(part.get("text", "")) for part in content if isinstance(part, dict))


def output_text(output: Any) -> str:
    """A final output as text (structured output: its JSON)."""
    return output if isinstance(output, str) else orjson.dumps(output).decode()


def model_text(result: RunResultBase) -> str | None:
    """The final answer's text as the model wrote it (for structured output, the JSON text a
    stream sends and a conversation stores, with the model's own spacing)."""
    for item in reversed(result.new_items):
        if isinstance(item, MessageOutputItem):
            return ItemHelpers.text_message_output(item)
    return None


def checked_texts(output: Any) -> list[str]:
    """What output patterns are matched against, one text at a time: the answer's text; for
    structured output, its JSON, then every string in it (keys and values) as a client reads
    it once decoded (the JSON writes a newline or a quote escaped, where a pattern would miss
    it; an anchored pattern matches at the string's own start and end)."""
    if isinstance(output, str):
        return [output]
    texts = [output_text(output)]
    stack: list[Any] = [output]
    while stack:
        value = stack.pop()
        if isinstance(value, str):
            texts.append(value)
        elif isinstance(value, dict):
            texts.extend(str(key) for key in value)
            stack.extend(reversed(value.values()))
        elif isinstance(value, list):
            stack.extend(reversed(value))
    return texts
