"""Deterministic answer, tool-call and usage logic shared by both OpenAI APIs.

Both ``/v1/chat/completions`` and ``/v1/responses`` requests are first normalised into a
:class:`Conversation`, then :func:`plan_answer` decides what the mock "model" says. Nothing
here depends on time or randomness: the same request always yields the same :class:`Plan`.

Usage formula:

* ``input_tokens = max(1, chars // 4)`` where ``chars`` is the total length of every text in
  the request (message contents, instructions, tool-call names and arguments, tool outputs)
  plus, for every function tool offered, ``len(name) + len(description) +
  len(orjson.dumps(parameters))``.
* ``output_tokens`` = number of whitespace-separated words of the answer text, or
  ``10 + len(arguments_json) // 4`` for a tool call; never more than the max-tokens limit.
* ``total_tokens = input_tokens + output_tokens``.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass, field
from typing import Any

import orjson

FAULT_RE = re.compile(r"\[\[fault:([a-z0-9]+)\]\]", re.IGNORECASE)
LATENCY_RE = re.compile(r"\[\[latency:(\d+(?:\.\d+)?)\]\]", re.IGNORECASE)
FLAG_RE = re.compile(r"\[\[(tripwire|loop|invalid-json|preamble)\]\]", re.IGNORECASE)
TOOL_CALLS_RE = re.compile(r"\[\[tool-calls:(\d+)\]\]", re.IGNORECASE)
RETRY_AFTER_RE = re.compile(r"\[\[retry-after:(\d{1,6})\]\]", re.IGNORECASE)
MARKER_RE = re.compile(
    r"\s*\[\[(?:(?:fault|latency|tool-calls|retry-after):[^\]]*|tripwire|loop|invalid-json|preamble)\]\]",
    re.IGNORECASE,
)
HANDOFF_PREFIX = "transfer_to_"
"""Function tools named ``transfer_to_<agent>`` are handoffs (the Agents SDK's naming)."""
MAX_SCHEMA_DEPTH = 32
EXPR_RE = re.compile(r"\(*\s*\d[\d.]*(?:\s*[-+*/%^]\s*\(*\s*\d[\d.]*\s*\)*)+")
WORD_RE = re.compile(r"\s*\S+")

_JSON_DECODER = json.JSONDecoder()


@dataclass(slots=True)
class ToolDef:
    """A function tool offered to the model."""

    name: str
    parameters: dict[str, Any]


@dataclass(slots=True)
class Conversation:
    """API-independent view of a request, as far as the mock needs it."""

    chars: int = 0
    user_text: str = ""
    tools: list[ToolDef] = field(default_factory=list)
    tool_result: tuple[str | None, str] | None = None
    tool_choice: Any = "auto"
    max_tokens: int | None = None
    output_schema: dict[str, Any] | None = None
    """The JSON schema of a requested structured output (``response_format`` / ``text``)."""
    called: set[str] = field(default_factory=set)
    """Names of the function calls made since the last user message."""
    flags: frozenset[str] = frozenset()
    """``tripwire`` / ``loop`` / ``invalid-json`` markers of the last user message."""
    tool_calls: int = 0
    """Calls of function tools other than handoffs made since the last user message."""
    repeat_calls: int | None = None
    """``[[tool-calls:N]]`` of the last user message: the named tool is called N times in a
    row (one call per answer) before the text answer; None: the usual single call."""


@dataclass(slots=True)
class Plan:
    """What the mock model answers: either a text or a single function call."""

    input_tokens: int
    output_tokens: int
    text: str = ""
    chunks: list[str] = field(default_factory=list)
    tool_name: str | None = None
    arguments: str = ""
    truncated: bool = False
    preamble: str = ""
    """Text sent beside the function call (``[[preamble]]``; Chat Completions only)."""

    @property
    def total_tokens(self) -> int:
        """Sum of input and output tokens."""
        return self.input_tokens + self.output_tokens


def content_text(content: Any) -> str:
    """Extract the text of a message content (string or list of typed parts).

    Args:
        content: A string, a list of content parts (``{"type": ..., "text": ...}``) or None.

    Returns:
        The concatenated text of all parts carrying a string ``text`` (or ``refusal``).
    """
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        parts: list[str] = []
        for part in content:
            if isinstance(part, str):
                parts.append(part)
            elif isinstance(part, dict):
                text = part.get("text", part.get("refusal"))
                if isinstance(text, str):
                    parts.append(text)
        return "".join(parts)
    return ""


def tool_chars(tool: ToolDef, description: Any) -> int:
    """Count the characters a function tool definition contributes to the input.

    Args:
        tool: The tool.
        description: Its description (any non-string counts as empty).

    Returns:
        ``len(name) + len(description) + len(orjson.dumps(parameters))``.
    """
    desc_len = len(description) if isinstance(description, str) else 0
    return len(tool.name) + desc_len + len(orjson.dumps(tool.parameters))


def parse_markers(text: str) -> tuple[str | None, float]:
    """Find the per-request fault and latency markers in a user message.

    Args:
        text: The last user message text.

    Returns:
        ``(fault, extra_latency_ms)``; fault is e.g. ``"500"``, ``"timeout"``, ``"stall"``,
        ``"bad"`` or None.
    """
    if "[[" not in text:
        return None, 0.0
    fault_match = FAULT_RE.search(text)
    latency_match = LATENCY_RE.search(text)
    fault = fault_match.group(1).lower() if fault_match else None
    latency = float(latency_match.group(1)) if latency_match else 0.0
    return fault, latency


def parse_flags(text: str) -> frozenset[str]:
    """The behaviour flags (``[[tripwire]]``, ``[[loop]]``, ``[[invalid-json]]``,
    ``[[preamble]]``) of a text."""
    if "[[" not in text:
        return frozenset()
    return frozenset(match.lower() for match in FLAG_RE.findall(text))


def parse_tool_calls(text: str) -> int | None:
    """N of a ``[[tool-calls:N]]`` marker in a text (None without one)."""
    if "[[" not in text:
        return None
    match = TOOL_CALLS_RE.search(text)
    return int(match.group(1)) if match else None


def parse_retry_after(text: str) -> str | None:
    """N of a ``[[retry-after:N]]`` marker in a text (None without one)."""
    if "[[" not in text:
        return None
    match = RETRY_AFTER_RE.search(text)
    return match.group(1) if match else None


def strip_markers(text: str) -> str:
    """Remove fault/latency markers from a message text."""
    return MARKER_RE.sub("", text).strip() if "[[" in text else text.strip()


def short_hash(body: bytes) -> str:
    """Deterministic 24-hex-digit hash of a request body, used to build ids."""
    return hashlib.blake2b(body, digest_size=12).hexdigest()


def split_words(text: str) -> list[str]:
    """Split a text into stream chunks of one word each (with its leading whitespace).

    ``"".join(split_words(t)) == t.strip()`` and ``len(split_words(t))`` is the word count.
    """
    return WORD_RE.findall(text.strip())


def _mentioned_tool(text: str, tools: list[ToolDef]) -> ToolDef | None:
    """Return the tool whose name appears first (as a whole word) in ``text``."""
    lowered = text.lower()
    best: tuple[int, ToolDef] | None = None
    for tool in tools:
        name = tool.name.lower()
        if not name or name not in lowered:
            continue
        match = re.search(rf"(?<![a-z0-9_]){re.escape(name)}(?![a-z0-9_])", lowered)
        if match and (best is None or match.start() < best[0]):
            best = (match.start(), tool)
    return best[1] if best else None


def _forced_tool_name(tool_choice: Any) -> str | None:
    """Name of the function forced by ``tool_choice`` (chat or responses shape), if any."""
    if isinstance(tool_choice, dict) and tool_choice.get("type") == "function":
        name = tool_choice.get("name")
        function = tool_choice.get("function")
        if name is None and isinstance(function, dict):
            name = function.get("name")
        return name if isinstance(name, str) else None
    return None


def _json_object_in(text: str) -> dict[str, Any] | None:
    """Return the first JSON object literal embedded in ``text``, if any."""
    start = text.find("{")
    while start != -1:
        try:
            value, _ = _JSON_DECODER.raw_decode(text, start)
        except ValueError:
            value = None
        if isinstance(value, dict):
            return value
        start = text.find("{", start + 1)
    return None


def _schema_value(schema: Any, text: str) -> Any:
    """Deterministic placeholder value for a JSON schema property."""
    if not isinstance(schema, dict):
        return None
    kind = schema.get("type")
    if isinstance(kind, list):
        kind = next((k for k in kind if k != "null"), None)
    if kind is None:
        variants = schema.get("anyOf") or schema.get("oneOf")
        if isinstance(variants, list) and variants:
            return _schema_value(variants[0], text)
    if kind == "string":
        expr = EXPR_RE.search(text)
        return expr.group(0).strip() if expr else text
    if kind in ("number", "integer"):
        return 0
    if kind == "boolean":
        return False
    return None


def build_arguments(tool: ToolDef, text: str) -> str:
    """Build the JSON arguments of a call to ``tool`` from the user message.

    Args:
        tool: The tool to call.
        text: The last user message text (markers removed).

    Returns:
        Compact JSON: the first ``{...}`` object literal of ``text`` if there is one,
        otherwise one placeholder value per required property of the tool's schema.
    """
    literal = _json_object_in(text) if "{" in text else None
    if literal is not None:
        return orjson.dumps(literal).decode()
    props = tool.parameters.get("properties")
    required = tool.parameters.get("required")
    args: dict[str, Any] = {}
    if isinstance(props, dict) and isinstance(required, list):
        for key in required:
            if isinstance(key, str):
                args[key] = _schema_value(props.get(key), text)
    return orjson.dumps(args).decode()


def _resolve_ref(schema: dict[str, Any], root: dict[str, Any]) -> Any:
    """The target of a local ``$ref`` (``#/$defs/x``), or the schema itself."""
    ref = schema.get("$ref")
    if not isinstance(ref, str) or not ref.startswith("#/"):
        return schema
    target: Any = root
    for part in ref[2:].split("/"):
        target = target.get(part) if isinstance(target, dict) else None
    return target if isinstance(target, dict) else {}


def schema_instance(
    schema: Any, text: str, *, tripwire: bool = False, root: Any = None, depth: int = 0
) -> Any:
    """A deterministic value that satisfies a (strict) JSON schema.

    Objects get every property; ``enum``/``const`` their first value; the first non-null
    type of a union; strings ``text``; numbers their ``minimum`` (else 0); arrays
    ``minItems`` copies of an item; booleans false, except a property named ``tripwire``
    when ``tripwire`` is set (how a test trips a classifier guardrail).
    """
    root = schema if root is None else root
    if not isinstance(schema, dict) or depth > MAX_SCHEMA_DEPTH:
        return None
    schema = _resolve_ref(schema, root)
    if "const" in schema:
        return schema["const"]
    enum = schema.get("enum")
    if isinstance(enum, list) and enum:
        return enum[0]
    variants = schema.get("anyOf") or schema.get("oneOf") or schema.get("allOf")
    kind = schema.get("type")
    if kind is None and isinstance(variants, list) and variants:
        usable = [v for v in variants if not (isinstance(v, dict) and v.get("type") == "null")]
        return schema_instance(
            (usable or variants)[0], text, tripwire=tripwire, root=root, depth=depth + 1
        )
    if isinstance(kind, list):
        kind = next((k for k in kind if k != "null"), "null")
    if kind == "object" or (kind is None and "properties" in schema):
        props = schema.get("properties")
        value: dict[str, Any] = {}
        for key, sub in props.items() if isinstance(props, dict) else ():
            if key == "tripwire" and isinstance(sub, dict) and sub.get("type") == "boolean":
                value[key] = tripwire
            else:
                value[key] = schema_instance(
                    sub, text, tripwire=tripwire, root=root, depth=depth + 1
                )
        return value
    if kind == "array":
        count = schema.get("minItems")
        count = count if isinstance(count, int) and 0 < count <= 8 else 0
        item = schema_instance(
            schema.get("items"), text, tripwire=tripwire, root=root, depth=depth + 1
        )
        return [item] * count
    if kind == "string":
        return text
    if kind in ("number", "integer"):
        minimum = schema.get("minimum")
        return minimum if isinstance(minimum, int | float) and not isinstance(minimum, bool) else 0
    if kind == "boolean":
        return False
    return None


def structured_text(conv: Conversation, text: str) -> str:
    """The JSON answer to a structured-output request, its strings set to ``text`` (with
    ``[[invalid-json]]``: a JSON object that does not follow the schema)."""
    if "invalid-json" in conv.flags:
        return '{"mock": "this answer ignores the requested schema"}'
    value = schema_instance(conv.output_schema, text, tripwire="tripwire" in conv.flags)
    return json.dumps(value, ensure_ascii=False)


def _handoff_to_call(conv: Conversation) -> ToolDef | None:
    """The offered handoff tool the user message names, unless it was already called since
    that message (with ``[[loop]]``: called every time, to test turn limits on cycles)."""
    handoffs = [t for t in conv.tools if t.name.startswith(HANDOFF_PREFIX)]
    if not handoffs:
        return None
    if "loop" not in conv.flags:
        handoffs = [t for t in handoffs if t.name not in conv.called]
    return _mentioned_tool(conv.user_text, handoffs)


def plan_answer(conv: Conversation) -> Plan:
    """Decide the deterministic answer to a normalised request.

    Args:
        conv: The normalised request.

    Returns:
        A text plan (``tool_name is None``) or a single function-call plan, with usage.
    """
    input_tokens = max(1, conv.chars // 4)
    limit = conv.max_tokens
    tool: ToolDef | None = None
    if conv.tools and conv.tool_choice != "none":
        tool = _handoff_to_call(conv)
    if conv.repeat_calls is None:
        may_call = conv.tool_result is None
    else:  # [[tool-calls:N]]: call again until N calls follow the user message
        may_call = conv.tool_calls < conv.repeat_calls
    if tool is None and may_call and conv.tools and conv.tool_choice != "none":
        forced = _forced_tool_name(conv.tool_choice)
        if forced is not None:
            tool = next((t for t in conv.tools if t.name == forced), None)
        if tool is None:
            tool = _mentioned_tool(conv.user_text, conv.tools)
        if tool is None and conv.tool_choice == "required":
            tool = conv.tools[0]
    if tool is not None:
        if tool.name.startswith(HANDOFF_PREFIX):
            arguments = "{}"
        else:
            arguments = build_arguments(tool, conv.user_text)
        output_tokens = 10 + len(arguments) // 4
        preamble = ""
        if "preamble" in conv.flags:
            preamble = f"Calling {tool.name} for: {conv.user_text}"
            output_tokens += len(split_words(preamble))
        if limit is not None:
            output_tokens = min(output_tokens, limit)
        return Plan(
            input_tokens, output_tokens, tool_name=tool.name, arguments=arguments, preamble=preamble
        )

    if conv.tool_result is not None:
        name, output = conv.tool_result
        text = f"The {name} tool returned: {output}" if name else f"The tool returned: {output}"
    else:
        text = f"Mock answer to: {conv.user_text}"
    if conv.output_schema is not None:
        text = structured_text(conv, text)
    chunks = split_words(text)
    truncated = limit is not None and len(chunks) > limit
    if truncated:
        chunks = chunks[:limit]
    return Plan(input_tokens, len(chunks), "".join(chunks), chunks, truncated=truncated)


def max_tokens_of(body: dict[str, Any], *keys: str) -> int | None:
    """Return the first integer limit found under ``keys`` (clamped to >= 1), else None."""
    for key in keys:
        value = body.get(key)
        if isinstance(value, int) and not isinstance(value, bool):
            return max(1, value)
    return None
