"""A streamed run as Chat Completions chunks: the runs stream's events, encoded for OpenAI
clients (`gateway.runs.streaming` produces the events, keep-alives and cancellation).

The stream is: a first chunk with `delta: {"role": "assistant", "content": ""}`, one chunk per
`output_text.delta` of the run, a chunk with an empty delta and `finish_reason` (`stop`, or
`length` when the answer was cut at its `max_tokens`), then,
with `stream_options.include_usage`, a chunk with `choices: []` and the run's `usage`, and
`data: [DONE]`. Tool calls run inside the gateway and are not sent as tool-call deltas. Text
of every model turn is forwarded as it arrives (a turn that calls a tool may say something
before the final answer; the mock LLM and most models do not).

A failed run ends the stream with `data: {"error": {...}}` (the body `run.failed` carries)
and no `[DONE]`: OpenAI clients raise on an error event, and a missing `[DONE]` also tells a
hand-written client that the answer is incomplete.
"""

from __future__ import annotations

from typing import Any

import orjson

from gateway.chat.objects import completion_id, created, finish_reason, usage
from gateway.runs.handle import RunHandle

DONE = b"data: [DONE]\n\n"


def data(payload: Any) -> bytes:
    """One unnamed SSE event, as OpenAI streams send them."""
    return b"data: " + orjson.dumps(payload) + b"\n\n"


class ChunkEncoder:
    """Encodes one run's events (an `Encoder` of `gateway.runs.streaming.stream_run`)."""

    def __init__(self, handle: RunHandle, *, include_usage: bool) -> None:
        self.handle = handle
        self.include_usage = include_usage
        self.head = {
            "id": completion_id(handle),
            "object": "chat.completion.chunk",
            "created": created(handle),
            "model": handle.built.name,
        }

    def chunk(self, delta: dict[str, str], finish_reason: str | None = None) -> bytes:
        choice = {"index": 0, "delta": delta, "finish_reason": finish_reason, "logprobs": None}
        return data({**self.head, "choices": [choice]})

    def __call__(self, name: str, payload: Any) -> bytes | None:
        if name == "output_text.delta":
            return self.chunk({"content": payload["delta"]})
        if name == "run.created":
            return self.chunk({"role": "assistant", "content": ""})
        if name == "run.completed":
            end = self.chunk({}, finish_reason(self.handle))
            if self.include_usage:
                end += data({**self.head, "choices": [], "usage": usage(self.handle)})
            return end + DONE
        if name == "run.failed":
            return data(payload)
        return None  # tool calls, tool outputs, handoffs: server-side
