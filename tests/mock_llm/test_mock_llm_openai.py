"""The official OpenAI client against the mock running as a real HTTP server."""

from __future__ import annotations

import httpx
import openai
from openai.types.chat import ChatCompletionMessageParam, ChatCompletionToolParam
from openai.types.responses import FunctionToolParam

PROMPT = "Tell me something about deterministic mocks"
ANSWER = f"Mock answer to: {PROMPT}"
WORDS = len(ANSWER.split())
MESSAGES: list[ChatCompletionMessageParam] = [
    {"role": "system", "content": "Be brief."},
    {"role": "user", "content": PROMPT},
]
CHAT_INPUT_TOKENS = (len("Be brief.") + len(PROMPT)) // 4
RESP_INPUT_TOKENS = (len("Be brief.") + len(PROMPT)) // 4


async def test_chat_plain(mock_client: openai.AsyncOpenAI) -> None:
    result = await mock_client.chat.completions.create(model="mock-model", messages=MESSAGES)
    assert result.id.startswith("chatcmpl-")
    assert result.model == "mock-model"
    choice = result.choices[0]
    assert choice.message.content == ANSWER
    assert choice.finish_reason == "stop"
    assert result.usage is not None
    assert result.usage.prompt_tokens == CHAT_INPUT_TOKENS
    assert result.usage.completion_tokens == WORDS
    assert result.usage.total_tokens == CHAT_INPUT_TOKENS + WORDS
    assert result.usage.prompt_tokens_details is not None
    assert result.usage.prompt_tokens_details.cached_tokens == 0
    assert result.usage.completion_tokens_details is not None
    assert result.usage.completion_tokens_details.reasoning_tokens == 0


async def test_chat_stream_with_and_without_usage(mock_client: openai.AsyncOpenAI) -> None:
    stream = await mock_client.chat.completions.create(
        model="mock-model",
        messages=MESSAGES,
        stream=True,
        stream_options={"include_usage": True},
    )
    deltas: list[str] = []
    usage = None
    finish = None
    async for chunk in stream:
        if chunk.usage is not None:
            usage = chunk.usage
            assert chunk.choices == []
        for choice in chunk.choices:
            if choice.delta.content:
                deltas.append(choice.delta.content)
            finish = choice.finish_reason or finish
    assert "".join(deltas) == ANSWER
    assert len(deltas) == WORDS
    assert finish == "stop"
    assert usage is not None
    assert (usage.prompt_tokens, usage.completion_tokens) == (CHAT_INPUT_TOKENS, WORDS)

    stream = await mock_client.chat.completions.create(
        model="mock-model",
        messages=MESSAGES,
        stream=True,
    )
    assert all([chunk.usage is None async for chunk in stream])


async def test_chat_stream_helper_accumulates(mock_client: openai.AsyncOpenAI) -> None:
    async with mock_client.chat.completions.stream(
        model="mock-model",
        messages=MESSAGES,
        stream_options={"include_usage": True},
    ) as stream:
        final = await stream.get_final_completion()
    assert final.choices[0].message.content == ANSWER
    assert final.usage is not None and final.usage.completion_tokens == WORDS


async def test_responses_plain(mock_client: openai.AsyncOpenAI) -> None:
    result = await mock_client.responses.create(
        model="mock-model", instructions="Be brief.", input=PROMPT
    )
    assert result.id.startswith("resp_")
    assert result.status == "completed"
    assert result.output_text == ANSWER
    assert result.usage is not None
    assert result.usage.input_tokens == RESP_INPUT_TOKENS
    assert result.usage.output_tokens == WORDS
    assert result.usage.total_tokens == RESP_INPUT_TOKENS + WORDS
    assert result.usage.input_tokens_details.cached_tokens == 0
    assert result.usage.output_tokens_details.reasoning_tokens == 0


async def test_responses_stream_events(mock_client: openai.AsyncOpenAI) -> None:
    stream = await mock_client.responses.create(
        model="mock-model", instructions="Be brief.", input=PROMPT, stream=True
    )
    events = [event async for event in stream]
    types = [event.type for event in events]
    assert types[:4] == [
        "response.created",
        "response.in_progress",
        "response.output_item.added",
        "response.content_part.added",
    ]
    assert types[-4:] == [
        "response.output_text.done",
        "response.content_part.done",
        "response.output_item.done",
        "response.completed",
    ]
    assert [event.sequence_number for event in events] == list(range(len(events)))
    deltas = [e.delta for e in events if e.type == "response.output_text.delta"]
    assert "".join(deltas) == ANSWER and len(deltas) == WORDS
    completed = events[-1]
    assert completed.type == "response.completed"
    assert completed.response.output_text == ANSWER
    assert completed.response.usage is not None
    assert completed.response.usage.input_tokens == RESP_INPUT_TOKENS
    assert completed.response.usage.output_tokens == WORDS


async def test_responses_stream_helper(mock_client: openai.AsyncOpenAI) -> None:
    tools: list[FunctionToolParam] = [
        {
            "type": "function",
            "name": "calculator",
            "strict": None,
            "parameters": {
                "type": "object",
                "properties": {"expression": {"type": "string"}},
                "required": ["expression"],
            },
        }
    ]
    async with mock_client.responses.stream(
        model="mock-model",
        input="what is 2+3*4? use the calculator",
        tools=tools,
    ) as stream:
        final = await stream.get_final_response()
    call = final.output[0]
    assert call.type == "function_call"
    assert call.name == "calculator"
    assert call.arguments == '{"expression":"2+3*4"}'
    assert call.call_id.startswith("call_") and (call.id or "").startswith("fc_")
    assert final.usage is not None and final.usage.output_tokens == 10 + len(call.arguments) // 4


async def test_chat_tool_call_then_result(mock_client: openai.AsyncOpenAI) -> None:
    tools: list[ChatCompletionToolParam] = [
        {
            "type": "function",
            "function": {
                "name": "lookup",
                "parameters": {
                    "type": "object",
                    "properties": {"query": {"type": "string"}},
                    "required": ["query"],
                },
            },
        }
    ]
    messages: list[ChatCompletionMessageParam] = [
        {"role": "user", "content": 'lookup {"query": "x"}'}
    ]
    result = await mock_client.chat.completions.create(
        model="m",
        messages=messages,
        tools=tools,
    )
    assert result.choices[0].finish_reason == "tool_calls"
    calls = result.choices[0].message.tool_calls
    assert calls is not None and len(calls) == 1
    call = calls[0]
    assert call.type == "function" and call.function.name == "lookup"
    assert call.function.arguments == '{"query":"x"}'
    messages.append(result.choices[0].message.model_dump(exclude_none=True))  # type: ignore[arg-type]
    messages.append({"role": "tool", "tool_call_id": call.id, "content": "found it"})
    result = await mock_client.chat.completions.create(
        model="m",
        messages=messages,
        tools=tools,
    )
    assert result.choices[0].message.content == "The lookup tool returned: found it"
    assert result.choices[0].finish_reason == "stop"


async def test_chat_preamble_writes_text_beside_the_tool_call(
    mock_client: openai.AsyncOpenAI,
) -> None:
    """`[[preamble]]`: the answer that calls a tool also carries text, plain and streamed (the
    text first, then the call), as a real model writing both in one answer does."""
    tools: list[ChatCompletionToolParam] = [
        {"type": "function", "function": {"name": "lookup", "parameters": {"type": "object"}}}
    ]
    messages: list[ChatCompletionMessageParam] = [
        {"role": "user", "content": "lookup the thing [[preamble]]"}
    ]
    result = await mock_client.chat.completions.create(model="m", messages=messages, tools=tools)
    message = result.choices[0].message
    assert message.content == "Calling lookup for: lookup the thing"
    assert message.tool_calls is not None and message.tool_calls[0].function.name == "lookup"
    stream = await mock_client.chat.completions.create(
        model="m", messages=messages, tools=tools, stream=True
    )
    order: list[str] = []
    text = ""
    async for chunk in stream:
        delta = chunk.choices[0].delta if chunk.choices else None
        if delta is not None and delta.content:
            text += delta.content
            order.append("text")
        if delta is not None and delta.tool_calls:
            order.append("call")
    assert text == "Calling lookup for: lookup the thing"
    assert order.index("call") > max(i for i, kind in enumerate(order) if kind == "text")


async def test_determinism(mock_client: openai.AsyncOpenAI) -> None:
    first = await mock_client.responses.create(model="m", input=PROMPT)
    second = await mock_client.responses.create(model="m", input=PROMPT)
    assert first.id == second.id
    assert first.output_text == second.output_text
    assert first.usage == second.usage
    a = await mock_client.chat.completions.create(model="m", messages=MESSAGES)
    b = await mock_client.chat.completions.create(model="m", messages=MESSAGES)
    assert a.id == b.id
    assert a.choices[0].message == b.choices[0].message
    assert a.usage == b.usage


async def test_max_tokens_truncation(mock_client: openai.AsyncOpenAI) -> None:
    result = await mock_client.chat.completions.create(
        model="m",
        messages=MESSAGES,
        max_completion_tokens=3,
    )
    assert result.choices[0].message.content == "Mock answer to:"
    assert result.choices[0].finish_reason == "length"
    assert result.usage is not None and result.usage.completion_tokens == 3

    stream = await mock_client.chat.completions.create(
        model="m",
        messages=MESSAGES,
        max_tokens=2,
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = [chunk async for chunk in stream]
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == "Mock answer"
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens == 2

    response = await mock_client.responses.create(model="m", input=PROMPT, max_output_tokens=16)
    assert response.status == "completed"
    response = await mock_client.responses.create(model="m", input=PROMPT, max_output_tokens=4)
    assert response.status == "incomplete"
    assert response.incomplete_details is not None
    assert response.incomplete_details.reason == "max_output_tokens"
    assert response.output_text == "Mock answer to: Tell"
    assert response.usage is not None and response.usage.output_tokens == 4

    rstream = await mock_client.responses.create(
        model="m", input=PROMPT, max_output_tokens=4, stream=True
    )
    events = [event async for event in rstream]
    assert events[-1].type == "response.incomplete"
    assert events[-1].response.usage is not None
    assert events[-1].response.usage.output_tokens == 4


async def test_models_health_and_errors(mock_client: openai.AsyncOpenAI, mock_llm_url: str) -> None:
    models = [model.id async for model in mock_client.models.list()]
    assert "mock-model" in models
    root = mock_llm_url.removesuffix("/v1")
    async with httpx.AsyncClient(base_url=root) as http:
        health = await http.get("/healthz")
        assert health.status_code == 200 and health.json() == {"status": "ok"}
        missing = await http.get("/v1/nope")
        assert missing.status_code == 404 and "error" in missing.json()
        bad = await http.post("/v1/chat/completions", content=b"{nope")
        assert bad.status_code == 400
        assert bad.json()["error"]["type"] == "invalid_request_error"
        no_messages = await http.post("/v1/chat/completions", json={"model": "m"})
        assert no_messages.status_code == 400
