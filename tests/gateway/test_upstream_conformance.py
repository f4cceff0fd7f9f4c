"""The lean upstream client against the stock openai client: same scenarios, same outcome.

Each scenario is scripted on a real HTTP upstream (tests/gateway/scripted_upstream.py) and
run through the Agents SDK's own model over both clients, as the gateway builds them
(`ProviderRegistry` with `GATEWAY_UPSTREAM_CLIENT=openai`, then `lean`). What must be equal:
what the upstream received (each attempt's JSON body and path), and what the SDK sees (the
`ModelResponse`: output items, usage with cached and reasoning tokens, ids; or every stream
event; or the exception: class, status, body, message). Both upstream APIs, plain and
streamed, tool calls, 429/5xx with `Retry-After`, retries, timeouts, malformed answers.
The end-to-end half compares what a gateway client gets over each client.
"""

from __future__ import annotations

import copy
import json
import re
from collections.abc import AsyncIterator
from typing import Any

import openai
import orjson
import pytest
from agents import ModelSettings, function_tool
from agents.models.interface import Model, ModelTracing
from agents.usage import Usage

from gateway.agents.providers import ProviderRegistry
from tests.conftest import make_settings
from tests.gateway.conftest import gateway_for
from tests.gateway.scripted_upstream import Scripted, ScriptedUpstream, scripted_upstream

CLIENTS = ("openai", "lean")
MODEL = "gpt-4.1-mini"
USAGE_RESPONSES = {
    "input_tokens": 120,
    "input_tokens_details": {"cached_tokens": 64},
    "output_tokens": 30,
    "output_tokens_details": {"reasoning_tokens": 12},
    "total_tokens": 150,
}
USAGE_CHAT = {
    "prompt_tokens": 120,
    "completion_tokens": 30,
    "total_tokens": 150,
    "prompt_tokens_details": {"cached_tokens": 64},
    "completion_tokens_details": {"reasoning_tokens": 12},
}
MESSAGE = {
    "type": "message",
    "id": "msg_1",
    "status": "completed",
    "role": "assistant",
    "content": [{"type": "output_text", "text": "Hello there", "annotations": []}],
}
FUNCTION_CALL = {
    "type": "function_call",
    "id": "fc_1",
    "call_id": "call_1",
    "name": "calculator",
    "arguments": '{"expression":"6*7"}',
    "status": "completed",
}


@function_tool
def calculator(expression: str) -> str:
    """Evaluate an arithmetic expression."""
    return expression


def response(output: list[Any], *, status: str = "completed", usage: Any = USAGE_RESPONSES) -> Any:
    return {
        "id": "resp_1",
        "object": "response",
        "created_at": 1_700_000_000,
        "status": status,
        "model": MODEL,
        "output": output,
        "parallel_tool_calls": True,
        "tool_choice": "auto",
        "tools": [],
        "temperature": 1.0,
        "top_p": 1.0,
        "usage": usage,
        "x_vendor_field": {"kept": True},
    }


def completion(message: dict[str, Any], finish: str) -> Any:
    return {
        "id": "chatcmpl-1",
        "object": "chat.completion",
        "created": 1_700_000_000,
        "model": MODEL,
        "choices": [{"index": 0, "finish_reason": finish, "message": message}],
        "usage": USAGE_CHAT,
    }


def responses_text_stream() -> list[Any]:
    text = {"item_id": "msg_1", "output_index": 0, "content_index": 0}
    part = {"type": "output_text", "text": "", "annotations": []}
    frames: list[Any] = [
        {"type": "response.created", "response": response([], status="in_progress", usage=None)},
        {
            "type": "response.output_item.added",
            "output_index": 0,
            "item": MESSAGE | {"status": "in_progress", "content": []},
        },
        {"type": "response.content_part.added", **text, "part": part},
        {"type": "response.output_text.delta", **text, "delta": "Hello ", "logprobs": []},
        {"type": "response.output_text.delta", **text, "delta": "there", "logprobs": []},
        {"type": "response.output_text.done", **text, "text": "Hello there", "logprobs": []},
        {"type": "response.content_part.done", **text, "part": part | {"text": "Hello there"}},
        {"type": "response.output_item.done", "output_index": 0, "item": MESSAGE},
        {"type": "response.completed", "response": response([MESSAGE])},
    ]
    for number, frame in enumerate(frames):
        frame["sequence_number"] = number
    return frames


def responses_tool_stream() -> list[Any]:
    frames: list[Any] = [
        {"type": "response.created", "response": response([], status="in_progress", usage=None)},
        {
            "type": "response.output_item.added",
            "output_index": 0,
            "item": FUNCTION_CALL | {"arguments": "", "status": "in_progress"},
        },
        {
            "type": "response.function_call_arguments.delta",
            "item_id": "fc_1",
            "output_index": 0,
            "delta": FUNCTION_CALL["arguments"],
        },
        {
            "type": "response.function_call_arguments.done",
            "item_id": "fc_1",
            "output_index": 0,
            "name": "calculator",
            "arguments": FUNCTION_CALL["arguments"],
        },
        {"type": "response.output_item.done", "output_index": 0, "item": FUNCTION_CALL},
        {"type": "response.completed", "response": response([FUNCTION_CALL])},
    ]
    for number, frame in enumerate(frames):
        frame["sequence_number"] = number
    return frames


def chunk(delta: dict[str, Any], finish: str | None = None) -> Any:
    return {
        "id": "chatcmpl-1",
        "object": "chat.completion.chunk",
        "created": 1_700_000_000,
        "model": MODEL,
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
    }


USAGE_CHUNK = chunk({}) | {"choices": [], "usage": USAGE_CHAT}
DONE = b"data: [DONE]\n\n"


def chat_text_stream() -> list[Any]:
    return [
        chunk({"role": "assistant", "content": "Hello "}),
        chunk({"content": "there"}),
        chunk({}, "stop"),
        USAGE_CHUNK,
        DONE,
    ]


def chat_tool_stream() -> list[Any]:
    call = {"index": 0, "id": "call_1", "type": "function"}
    return [
        chunk({"role": "assistant", "tool_calls": [call | {"function": {"name": "calculator"}}]}),
        chunk({"tool_calls": [{"index": 0, "function": {"arguments": '{"expression":'}}]}),
        chunk({"tool_calls": [{"index": 0, "function": {"arguments": '"6*7"}'}}]}),
        chunk({}, "tool_calls"),
        USAGE_CHUNK,
        DONE,
    ]


def ok(api: str, *, tool: bool = False) -> Scripted:
    if api == "responses":
        return Scripted(body=response([FUNCTION_CALL if tool else MESSAGE]))
    if tool:
        message = {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {
                    "id": "call_1",
                    "type": "function",
                    "function": {"name": "calculator", "arguments": '{"expression":"6*7"}'},
                }
            ],
        }
        return Scripted(body=completion(message, "tool_calls"))
    return Scripted(body=completion({"role": "assistant", "content": "Hello there"}, "stop"))


def cut(api: str, reason: str = "max_output_tokens") -> Scripted:
    """An answer stopped by the output limit (or, `reason`, by a content filter)."""
    if api == "responses":
        body = response([MESSAGE | {"status": "incomplete"}], status="incomplete")
        return Scripted(body=body | {"incomplete_details": {"reason": reason}})
    finish = "length" if reason == "max_output_tokens" else reason
    return Scripted(body=completion({"role": "assistant", "content": "Hello there"}, finish))


def streamed_cut(api: str) -> Scripted:
    """A stream stopped by the output limit."""
    if api != "responses":
        text = [chunk({"role": "assistant", "content": "Hello "}), chunk({"content": "there"})]
        return Scripted(frames=[*text, chunk({}, "length"), USAGE_CHUNK, DONE])
    frames = responses_text_stream()
    last = response([MESSAGE | {"status": "incomplete"}], status="incomplete")
    last |= {"incomplete_details": {"reason": "max_output_tokens"}}
    frames[-1] = {
        "type": "response.incomplete",
        "response": last,
        "sequence_number": len(frames) - 1,
    }
    return Scripted(frames=frames)


def streamed(api: str, *, tool: bool = False) -> Scripted:
    if api == "responses":
        return Scripted(frames=responses_tool_stream() if tool else responses_text_stream())
    return Scripted(frames=chat_tool_stream() if tool else chat_text_stream())


ERROR_429 = {"error": {"message": "Slow down.", "type": "requests", "code": "rate_limit_exceeded"}}
ERROR_500 = {"error": {"message": "Overloaded.", "type": "server_error", "code": None}}

# name -> (stream, answers(api), settings overrides)
SCENARIOS: dict[str, tuple[bool, Any, dict[str, Any]]] = {
    "text": (False, lambda api: [ok(api)], {}),
    "tool_call": (False, lambda api: [ok(api, tool=True)], {}),
    "stream_text": (True, lambda api: [streamed(api)], {}),
    "stream_tool_call": (True, lambda api: [streamed(api, tool=True)], {}),
    "cut_at_the_limit": (False, lambda api: [cut(api)], {}),
    "stream_cut_at_the_limit": (True, lambda api: [streamed_cut(api)], {}),
    "429_retry_after_then_ok": (
        False,
        lambda api: [Scripted(429, ERROR_429, headers={"retry-after": "0.05"}), ok(api)],
        {},
    ),
    "5xx_retried_then_ok_streamed": (
        True,
        lambda api: [Scripted(503, ERROR_500, headers={"retry-after-ms": "20"}), streamed(api)],
        {},
    ),
    "5xx_retries_spent": (
        False,
        lambda api: [Scripted(500, ERROR_500, headers={"retry-after-ms": "10"})] * 3,
        {"upstream_max_retries": 2},
    ),
    "429_retry_after_too_long": (
        False,
        lambda api: [Scripted(429, ERROR_429, headers={"retry-after": "600"})],
        {},
    ),
    "x_should_retry_false": (
        False,
        lambda api: [Scripted(503, ERROR_500, headers={"x-should-retry": "false"})],
        {},
    ),
    "400_not_retried": (
        False,
        lambda api: [Scripted(400, {"error": {"message": "Bad tools.", "type": "invalid"}})],
        {},
    ),
    "error_body_not_json": (
        False,
        lambda api: [Scripted(502, raw=b"<html>bad</html>", headers={"retry-after-ms": "5"})] * 2,
        {"upstream_max_retries": 1},
    ),
    "timeout": (
        False,
        lambda api: [Scripted(delay_s=1.0, body={})],
        {"upstream_timeout_s": 0.3, "upstream_max_retries": 0},
    ),
    "timeout_then_ok": (
        False,
        lambda api: [Scripted(delay_s=1.0, body={}), ok(api)],
        {"upstream_timeout_s": 0.3, "upstream_max_retries": 1},
    ),
    "stall_mid_stream": (
        True,
        lambda api: [
            Scripted(frames=streamed(api).frames[:2], stall_after_frames=1.0)  # type: ignore[index]
        ],
        {"upstream_timeout_s": 0.3, "upstream_max_retries": 0},
    ),
    "malformed_json": (False, lambda api: [Scripted(raw=b'{"id": "resp_1", "output": [')], {}),
    "malformed_stream_event": (True, lambda api: [Scripted(frames=[b"data: {not json\n\n"])], {}),
    "error_event_in_stream": (
        True,
        lambda api: [Scripted(frames=[{"error": {"message": "Upstream broke.", "code": "x"}}])],
        {},
    ),
}


async def run_model(model: Model, *, stream: bool, settings: ModelSettings) -> tuple[str, Any]:
    """What the SDK sees of one model call: ("response", …), ("events", […]) or ("error", …)."""
    args: Any = (
        "Be brief.",
        [{"role": "user", "content": "What is 6*7?"}],
        settings,
        [calculator],
        None,
        [],
        ModelTracing.DISABLED,
    )
    kwargs: Any = {"previous_response_id": None, "conversation_id": None, "prompt": None}
    try:
        if stream:
            events = [e async for e in model.stream_response(*args, **kwargs)]
            return "events", [normalise(e.model_dump()) for e in events]
        result = await model.get_response(*args, **kwargs)
    except Exception as exc:
        return "error", describe(exc)
    return "response", {
        "output": [normalise(item.model_dump()) for item in result.output],
        "usage": usage_of(result.usage),
        "response_id": result.response_id,
        "request_id": result.request_id,
    }


def usage_of(usage: Usage) -> Any:
    return {
        "requests": usage.requests,
        "input_tokens": usage.input_tokens,
        "output_tokens": usage.output_tokens,
        "total_tokens": usage.total_tokens,
        "cached_tokens": usage.input_tokens_details.cached_tokens,
        "reasoning_tokens": usage.output_tokens_details.reasoning_tokens,
    }


def normalise(value: Any) -> Any:
    """Drop what is a clock reading of the SDK itself (a synthesized `created_at`)."""
    if isinstance(value, dict):
        return {k: normalise(v) for k, v in value.items() if k != "created_at"}
    if isinstance(value, list):
        return [normalise(v) for v in value]
    return value


def describe(exc: BaseException) -> Any:
    described: dict[str, Any] = {"class": type(exc).__name__, "message": str(exc)}
    if isinstance(exc, openai.APIStatusError):
        described |= {"status": exc.status_code, "body": exc.body}
        described["retry_after"] = exc.response.headers.get("retry-after")
    elif isinstance(exc, openai.APIError):
        described |= {"body": exc.body}
    if isinstance(exc, json.JSONDecodeError):
        described = {"class": "JSONDecodeError"}  # the two parsers word their messages apart
    return described


async def through(
    client: str,
    upstream: ScriptedUpstream,
    api: str,
    stream: bool,
    answers: list[Scripted],
    **overrides: Any,
) -> tuple[tuple[str, Any], list[Any]]:
    upstream.script = copy.deepcopy(answers)
    upstream.received = []
    settings = make_settings(
        "sqlite+aiosqlite:///:memory:",
        openai_base_url=upstream.base_url,
        upstream_client=client,
        upstream_api=api,
        **overrides,
    )
    registry = ProviderRegistry(settings)
    try:
        model = registry.default().get_model(MODEL)
        model_settings = ModelSettings(include_usage=True) if stream else ModelSettings()
        outcome = await run_model(model, stream=stream, settings=model_settings)
    finally:
        await registry.close()
    seen = [(r.path, r.body, r.headers.get("Authorization")) for r in upstream.received]
    assert not upstream.script, f"{client}: {len(upstream.script)} scripted answers unused"
    assert len(seen) == len(answers), f"{client}: attempts beyond the script"
    return outcome, seen


@pytest.fixture
async def upstream() -> AsyncIterator[ScriptedUpstream]:
    async with scripted_upstream() as scripted:
        yield scripted


@pytest.mark.parametrize("api", ["responses", "chat_completions"])
@pytest.mark.parametrize("scenario", list(SCENARIOS))
async def test_lean_client_conforms_to_the_stock_client(
    upstream: ScriptedUpstream, api: str, scenario: str
) -> None:
    stream, answers, overrides = SCENARIOS[scenario]
    stock = await through("openai", upstream, api, stream, answers(api), **overrides)
    lean = await through("lean", upstream, api, stream, answers(api), **overrides)
    assert lean[1] == stock[1], "the upstream received different requests"
    assert lean[0] == stock[0], "the SDK saw a different outcome"
    assert stock[1], "no request reached the upstream"
    # What each scenario is about holds (so equal outcomes are not two equal failures).
    kind, detail = stock[0]
    expected = {
        "text": "response",
        "tool_call": "response",
        "stream_text": "events",
        "stream_tool_call": "events",
        "cut_at_the_limit": "response",
        "stream_cut_at_the_limit": "events",
        "429_retry_after_then_ok": "response",
        "5xx_retried_then_ok_streamed": "events",
        "timeout_then_ok": "response",
    }.get(scenario, "error")
    assert kind == expected, detail
    attempts = {"429_retry_after_then_ok": 2, "5xx_retried_then_ok_streamed": 2}
    attempts |= {"5xx_retries_spent": 3, "timeout_then_ok": 2, "error_body_not_json": 2}
    assert len(stock[1]) == attempts.get(scenario, 1)


async def test_an_answer_stopped_by_a_content_filter_still_fails(
    upstream: ScriptedUpstream,
) -> None:
    # Only the output limit makes a cut answer an answer; an incomplete one for any other
    # reason fails as the SDK fails it, through both clients.
    for client in ("openai", "lean"):
        outcome, _ = await through(
            client, upstream, "responses", False, [cut("responses", "content_filter")]
        )
        assert outcome[0] == "error" and "content_filter" in outcome[1]["message"], outcome


async def test_usage_with_cached_and_reasoning_tokens_reaches_the_sdk(
    upstream: ScriptedUpstream,
) -> None:
    for api in ("responses", "chat_completions"):
        (kind, detail), _ = await through("lean", upstream, api, False, [ok(api)])
        assert kind == "response"
        assert detail["usage"] == {
            "requests": 1,
            "input_tokens": 120,
            "output_tokens": 30,
            "total_tokens": 150,
            "cached_tokens": 64,
            "reasoning_tokens": 12,
        }


async def test_lean_requests_carry_the_sdk_body_and_the_key(upstream: ScriptedUpstream) -> None:
    _, seen = await through("lean", upstream, "responses", False, [ok("responses")])
    path, body, authorization = seen[0]
    assert path == "/v1/responses"
    assert authorization == "Bearer test-upstream-key"
    assert body["model"] == MODEL and body["instructions"] == "Be brief."
    assert body["tools"][0]["name"] == "calculator"
    assert "stream" not in body  # omitted values are dropped, not sent as null


# End to end: the same requests to a gateway over each client, against the mock LLM.
E2E_REQUESTS: list[tuple[str, dict[str, Any]]] = [
    ("/v1/agents/assistant/runs", {"input": "Say hello"}),
    ("/v1/agents/assistant/runs", {"input": "What is 12*7? Use the calculator."}),
    ("/v1/agents/assistant/runs", {"input": "What is 3*5? Use the calculator.", "stream": True}),
    ("/v1/agents/assistant/runs", {"input": "hi [[fault:429]]"}),
    ("/v1/agents/assistant/runs", {"input": "hi [[fault:bad]]"}),
    ("/v1/agents/assistant/runs", {"input": "hi [[fault:bad]]", "stream": True}),
    (
        "/v1/chat/completions",
        {"model": "assistant", "messages": [{"role": "user", "content": "Say hello"}]},
    ),
    (
        "/v1/chat/completions",
        {
            "model": "assistant",
            "messages": [{"role": "user", "content": "What is 2+2? Use the calculator."}],
            "stream": True,
            "stream_options": {"include_usage": True},
        },
    ),
]
VOLATILE_KEYS = {"id", "created", "created_at", "run_id", "duration_ms", "call_id", "item_id"}
ID_RE = re.compile(r"\b(run|conv|resp|msg|call|fc|chatcmpl|req)[-_][A-Za-z0-9_-]+")


def scrub(value: Any) -> Any:
    """A client-visible answer without what differs between any two runs (ids, clocks)."""
    if isinstance(value, dict):
        return {k: scrub(v) for k, v in value.items() if k not in VOLATILE_KEYS}
    if isinstance(value, list):
        return [scrub(v) for v in value]
    if isinstance(value, str):
        return ID_RE.sub(r"\1_*", value)
    return value


def answer_of(status: int, content_type: str, text: str) -> Any:
    if content_type.startswith("text/event-stream"):
        frames = [f for f in text.split("\n\n") if f.strip() and not f.startswith(":")]
        parsed = []
        for frame in frames:
            data = "".join(line[6:] for line in frame.split("\n") if line.startswith("data: "))
            event = [line[7:] for line in frame.split("\n") if line.startswith("event: ")]
            parsed.append([event, data if data == "[DONE]" else orjson.loads(data)])
        return status, scrub(parsed)
    return status, scrub(orjson.loads(text))


@pytest.mark.parametrize("api", ["responses", "chat_completions"])
async def test_a_gateway_client_gets_the_same_answers_over_both_clients(
    sqlite_url: str, mock_llm_base_url: str, api: str
) -> None:
    answers: dict[str, list[Any]] = {}
    for client in CLIENTS:
        # max_retries=0: a mock fault is answered at once (the retry rules are compared above).
        async for gw in gateway_for(
            sqlite_url,
            mock_llm_base_url,
            upstream_api=api,
            upstream_client=client,
            upstream_max_retries=0,
        ):
            tenant = await gw.create_tenant(f"conf-{client}")
            got = []
            for path, body in E2E_REQUESTS:
                r = await gw.client.post(path, json=body, headers=tenant.headers)
                got.append(answer_of(r.status_code, r.headers["content-type"], r.text))
            answers[client] = got
    for request, stock, lean in zip(E2E_REQUESTS, answers["openai"], answers["lean"], strict=True):
        assert lean == stock, request
    statuses = [status for status, _ in answers["lean"]]
    assert statuses == [200, 200, 200, 502, 502, 200, 200, 200]  # an upstream 429 is a 502
