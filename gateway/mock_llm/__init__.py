"""OpenAI-compatible mock LLM server: offline, deterministic, fast.

Used for demos, tests and benchmarks. Routes: ``POST /v1/chat/completions`` and
``POST /v1/responses`` (plain and ``"stream": true``), ``GET /v1/models``, ``GET /healthz``.

Behaviour (see :mod:`gateway.mock_llm.logic` for the exact usage formula):

* Text answer: ``"Mock answer to: <last user message>"``, streamed word by word.
* Tool calls: when function tools are offered and the last user message names one (first
  mentioned wins; or ``tool_choice`` forces one / is ``"required"``) and no tool result
  follows that message, the answer is one call of that tool. Arguments: the first JSON
  object literal ``{...}`` of the message, else one value per required schema property
  (strings get the first arithmetic expression of the message, e.g. ``"2+3*4"``, else the
  message; numbers 0; booleans false; others null). Once a tool result is present the
  answer is ``"The <tool> tool returned: <output>"``.
* Structured output: when the request asks for a JSON schema (chat
  ``response_format: {"type": "json_schema", ...}``, responses ``text.format``), the text
  answer is JSON that satisfies it (:func:`gateway.mock_llm.logic.schema_instance`): every
  property, ``enum``/``const`` first value, first non-null type of a union, strings = the text
  answer above, numbers their ``minimum`` or 0, arrays ``minItems`` items, booleans false.
* Handoffs: a function tool named ``transfer_to_<agent>`` (the Agents SDK's handoff tools)
  that the last user message names is called (arguments ``{}``) even after earlier tool
  results, unless it was already called since that message; so "transfer_to_billing" in a
  message hands off once, and the target then answers ``"The transfer_to_billing tool
  returned: {...}"``.
* ``max_tokens`` / ``max_completion_tokens`` / ``max_output_tokens`` truncate the answer to
  that many words (chat: ``finish_reason="length"``; responses: ``status="incomplete"``
  and terminal event ``response.incomplete``).
* Ids are derived from a hash of the request body (``chatcmpl-…``, ``resp_…``, ``msg_…``,
  ``fc_…``, ``call_…``), so identical requests get identical answers, ids and usage.

Per-request markers in the last user message (removed from the echoed text):

* ``[[fault:500]]``, ``[[fault:503]]``, ``[[fault:429]]`` (any 4xx/5xx): that HTTP status
  with an OpenAI-style ``{"error": {"message", "type", "param", "code"}}`` body; 429 adds
  ``retry-after: 0``, and ``[[retry-after:N]]`` beside the fault sends ``retry-after: N``.
* ``[[fault:timeout]]``: hang ``MockConfig.stall_seconds`` before answering.
* ``[[fault:stall]]``: streaming: send half of the deltas, then hang ``stall_seconds``;
  plain: same as timeout.
* ``[[fault:bad]]``: HTTP 200 with an invalid JSON body (or invalid SSE data).
* ``[[latency:NNN]]``: add NNN ms of latency to this request.
* ``[[tripwire]]``: in structured answers a boolean property named ``tripwire`` is true (how
  a test trips a classifier guardrail that answers ``{"tripwire": ..., ...}``).
* ``[[loop]]``: named handoffs are called every time, so two agents that hand off to each
  other ping-pong until the run's turn limit.
* ``[[invalid-json]]``: a structured answer is ``{"mock": "..."}``, which does not follow the
  requested schema.
* ``[[preamble]]``: an answer that calls a tool also carries the text
  ``"Calling <tool> for: <user text>"`` before the call, as a model that writes and calls in
  one answer does (Chat Completions only; the Responses API answers without it).
* ``[[tool-calls:N]]``: the named tool (or the forced one) is called N times in a row, one
  call per answer, before the text answer (``"The <tool> tool returned: <last output>"``);
  an agent run then makes exactly N + 1 model calls (how ``bench.kcalls`` gets k of them).
  Only calls of non-handoff tools made since the last user message count.

``GET /v1/_mock/ledger`` lists the usage of every answered completion (newest last, the last
100,000) with the start of its last user message (markers stripped), the model, the tool it
called (``tool_call``, or null) and whether a schema was asked for (``structured``), so tests
can find their own calls and check that the gateway's usage equals what the upstream
reported. A client that disconnects during the latency gets no answer and leaves no entry.
``GET /v1/_mock/waiting`` counts the requests inside their latency right now
(``{"waiting": n}``).

Server-wide knobs live in :class:`MockConfig` (``latency_ms``, ``stream_delay_ms``, random
``fault_rate``/``fault_status`` with a seeded RNG, ``stall_seconds``). With
``stream_delay_ms == 0`` a whole stream is written in one go.

Run it with :func:`run_mock_server` or ``python -m gateway.mock_llm --port 9100``; in tests
use :func:`gateway.mock_llm.testing.start_mock_server`.
"""

from __future__ import annotations

from .app import MockLLMApp, create_mock_app
from .config import MockConfig
from .server import run_mock_server

__all__ = ["MockConfig", "MockLLMApp", "create_mock_app", "run_mock_server"]
