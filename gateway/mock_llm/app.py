"""Raw ASGI application of the mock LLM (no framework overhead on the hot path)."""

from __future__ import annotations

import asyncio
import random
import time
from collections import deque
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

import orjson

from .chat import chat_completion, chat_stream, normalize_chat
from .config import MockConfig
from .logic import (
    parse_flags,
    parse_markers,
    parse_retry_after,
    parse_tool_calls,
    plan_answer,
    short_hash,
    strip_markers,
)
from .responses import normalize_responses, response_object, responses_stream
from .tools import tool_answer

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

MODEL_IDS = ("mock-model", "mock-model-mini", "gpt-4o-mini", "gpt-4.1-mini")
"""Model ids listed by ``GET /v1/models`` (any model name is accepted on completion routes)."""

_JSON = (b"content-type", b"application/json")
_SSE = [
    (b"content-type", b"text/event-stream; charset=utf-8"),
    (b"cache-control", b"no-cache"),
]
_ERRORS: dict[int, tuple[str, str | None, str]] = {
    400: ("invalid_request_error", None, "Invalid request."),
    401: ("invalid_request_error", "invalid_api_key", "Incorrect API key provided."),
    404: ("invalid_request_error", "not_found", "Not found."),
    405: ("invalid_request_error", "method_not_allowed", "Method not allowed."),
    429: ("requests", "rate_limit_exceeded", "Rate limit reached (mock fault)."),
    500: ("server_error", "internal_error", "The server had an error (mock fault)."),
    502: ("server_error", "bad_gateway", "Bad gateway (mock fault)."),
    503: ("server_error", "service_unavailable", "The engine is overloaded (mock fault)."),
    504: ("server_error", "gateway_timeout", "Gateway timeout (mock fault)."),
}
LEDGER_SIZE = 100_000
LEDGER_TEXT_CHARS = 120
"""How much of the last user message a ledger entry keeps, so a test can find its call."""
_BAD_JSON = b'{"id": "mock-bad-json", "object": '


def error_body(status: int, message: str | None = None) -> bytes:
    """OpenAI-style error JSON ``{"error": {"message", "type", "param", "code"}}``."""
    kind, code, default = _ERRORS.get(
        status, ("server_error" if status >= 500 else "invalid_request_error", None, "Error.")
    )
    error = {"message": message or default, "type": kind, "param": None, "code": code}
    return orjson.dumps({"error": error})


async def _send_bytes(
    send: Send, status: int, body: bytes, extra: list[tuple[bytes, bytes]] | None = None
) -> None:
    headers = [_JSON, (b"content-length", str(len(body)).encode())]
    if extra:
        headers.extend(extra)
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


async def _send_error(
    send: Send, status: int, message: str | None = None, retry_after: str | None = None
) -> None:
    if retry_after is None and status == 429:
        retry_after = "0"
    extra = [(b"retry-after", retry_after.encode())] if retry_after is not None else None
    await _send_bytes(send, status, error_body(status, message), extra)


async def _read_body(receive: Receive) -> bytes:
    message = await receive()
    body: bytes = message.get("body", b"")
    if not message.get("more_body"):
        return body
    parts = [body]
    while message.get("more_body"):
        message = await receive()
        parts.append(message.get("body", b""))
    return b"".join(parts)


async def _wait_disconnect(receive: Receive) -> None:
    while (await receive())["type"] != "http.disconnect":
        pass


async def stall(receive: Receive, seconds: float) -> bool:
    """Hang for ``seconds``, returning early if the client disconnects.

    Args:
        receive: The ASGI receive channel of the request (its body already consumed).
        seconds: Maximum hang time.

    Returns:
        True if the client disconnected meanwhile.
    """
    waiter = asyncio.ensure_future(_wait_disconnect(receive))
    try:
        done, _ = await asyncio.wait({waiter}, timeout=seconds)
        return bool(done)
    finally:
        if not waiter.done():
            waiter.cancel()


class MockLLMApp:
    """ASGI app serving the OpenAI-compatible mock endpoints."""

    def __init__(self, config: MockConfig | None = None) -> None:
        """Create the app.

        Args:
            config: Server-wide knobs; defaults to ``MockConfig()``.
        """
        self.config = config or MockConfig()
        self._rng = random.Random(self.config.seed)  # noqa: S311 - deterministic faults
        created = int(time.time())
        models = [
            {"id": mid, "object": "model", "created": created, "owned_by": "mock-llm"}
            for mid in MODEL_IDS
        ]
        self._models_body = orjson.dumps({"object": "list", "data": models})
        self.ledger: deque[dict[str, Any]] = deque(maxlen=LEDGER_SIZE)
        """Usage of every answered completion, newest last (tests compare against it)."""
        self.waiting = 0
        """Requests inside their latency right now (tests wait on it instead of sleeping)."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """ASGI entry point."""
        kind = scope["type"]
        if kind == "http":
            path: str = scope["path"]
            if path.startswith("/v1/"):
                path = path[3:]
            method = scope["method"]
            if path in ("/chat/completions", "/responses"):
                if method != "POST":
                    await _send_error(send, 405)
                else:
                    await self._complete(path == "/chat/completions", receive, send)
            elif path == "/models" and method == "GET":
                await _send_bytes(send, 200, self._models_body)
            elif path == "/_mock/ledger" and method == "GET":
                await _send_bytes(send, 200, orjson.dumps(list(self.ledger)))
            elif path.startswith("/_mock/tools/") and method == "POST":
                raw = await _read_body(receive)
                headers = dict(scope.get("headers") or [])
                signature = headers.get(b"x-gateway-signature", b"").decode("latin-1")
                answer = tool_answer(
                    path.rsplit("/", 1)[1], signature, raw, self.config.tool_secret
                )
                await _send_bytes(send, 200, orjson.dumps(answer))
            elif path == "/_mock/waiting" and method == "GET":
                await _send_bytes(send, 200, orjson.dumps({"waiting": self.waiting}))
            elif path in ("/healthz", "/health") and method == "GET":
                await _send_bytes(send, 200, b'{"status":"ok"}')
            else:
                await _send_error(send, 404, f"Unknown route {method} {scope['path']}")
        elif kind == "lifespan":
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    await send({"type": "lifespan.startup.complete"})
                elif message["type"] == "lifespan.shutdown":
                    await send({"type": "lifespan.shutdown.complete"})
                    return

    def _random_fault(self) -> str | None:
        config = self.config
        if config.fault_rate > 0 and self._rng.random() < config.fault_rate:
            return str(config.fault_status)
        return None

    async def _complete(self, is_chat: bool, receive: Receive, send: Send) -> None:
        """Serve one chat completions / responses request (plain or streamed)."""
        raw = await _read_body(receive)
        try:
            body = orjson.loads(raw)
        except orjson.JSONDecodeError:
            await _send_error(send, 400, "Request body is not valid JSON.")
            return
        if not isinstance(body, dict):
            await _send_error(send, 400, "Request body must be a JSON object.")
            return
        if is_chat and not isinstance(body.get("messages"), list):
            await _send_error(send, 400, "Missing required parameter: 'messages'.")
            return
        if not is_chat and not isinstance(body.get("input"), (str, list, type(None))):
            await _send_error(send, 400, "Invalid type for 'input'.")
            return
        conv = normalize_chat(body) if is_chat else normalize_responses(body)
        config = self.config
        fault, extra_ms = parse_markers(conv.user_text)
        if fault is None:
            fault = self._random_fault()
        delay = config.latency_ms + extra_ms
        if delay > 0:
            self.waiting += 1
            try:
                if await stall(receive, delay / 1000):
                    return  # the client left during the latency: nothing answered or recorded
            finally:
                self.waiting -= 1
        stream = body.get("stream") is True
        if fault is not None:
            if fault.isdigit() and 400 <= int(fault) <= 599:
                await _send_error(send, int(fault), retry_after=parse_retry_after(conv.user_text))
                return
            if fault == "timeout" or (fault == "stall" and not stream):
                if await stall(receive, config.stall_seconds):
                    return
            elif fault == "bad":
                if stream:
                    await send({"type": "http.response.start", "status": 200, "headers": _SSE})
                    await send(
                        {"type": "http.response.body", "body": b"data: " + _BAD_JSON + b"\n\n"}
                    )
                else:
                    await _send_bytes(send, 200, _BAD_JSON)
                return
        conv.flags = parse_flags(conv.user_text)
        conv.repeat_calls = parse_tool_calls(conv.user_text)
        conv.user_text = strip_markers(conv.user_text)
        plan = plan_answer(conv)
        rid = short_hash(raw)
        created = int(time.time())
        model = body.get("model") or "mock-model"
        self.ledger.append(
            {
                "api": "chat_completions" if is_chat else "responses",
                "model": model,
                "stream": stream,
                "input_tokens": plan.input_tokens,
                "output_tokens": plan.output_tokens,
                "total_tokens": plan.total_tokens,
                "user_text": conv.user_text[:LEDGER_TEXT_CHARS],
                "tool_call": plan.tool_name,
                "structured": conv.output_schema is not None,
            }
        )
        if not stream:
            if is_chat:
                payload = chat_completion(plan, rid, created, model)
            else:
                payload = orjson.dumps(response_object(body, plan, rid, created, final=True))
            await _send_bytes(send, 200, payload)
            return
        if is_chat:
            options = body.get("stream_options")
            include_usage = isinstance(options, dict) and options.get("include_usage") is True
            segments = chat_stream(plan, rid, created, model, include_usage)
        else:
            segments = responses_stream(body, plan, rid, created)
        await self._stream(segments, fault == "stall", receive, send)

    async def _stream(
        self, segments: list[bytes], stall_midway: bool, receive: Receive, send: Send
    ) -> None:
        """Send SSE segments, honouring ``stream_delay_ms`` and a mid-stream stall."""
        await send({"type": "http.response.start", "status": 200, "headers": _SSE})
        gap = self.config.stream_delay_ms / 1000
        stall_at = len(segments) // 2 if stall_midway else -1
        if gap <= 0 and stall_at < 0:
            await send({"type": "http.response.body", "body": b"".join(segments)})
            return
        for index, segment in enumerate(segments):
            if index == stall_at:
                if await stall(receive, self.config.stall_seconds):
                    return
            elif index and gap > 0:
                await asyncio.sleep(gap)
            await send({"type": "http.response.body", "body": segment, "more_body": True})
        await send({"type": "http.response.body", "body": b""})


def create_mock_app(config: MockConfig | None = None) -> MockLLMApp:
    """Create the mock LLM ASGI application.

    Args:
        config: Server-wide knobs (latency, stream delay, random faults); defaults to
            ``MockConfig()``.

    Returns:
        A raw ASGI app serving ``POST /v1/chat/completions``, ``POST /v1/responses``,
        ``GET /v1/models`` and ``GET /healthz``.
    """
    return MockLLMApp(config)
