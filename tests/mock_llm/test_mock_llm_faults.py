"""Fault injection, latency and server-wide knobs."""

from __future__ import annotations

import json
import random
import time
from collections.abc import Iterator

import httpx
import openai
import pytest
from openai.types.chat import ChatCompletionMessageParam

from gateway.mock_llm import MockConfig
from gateway.mock_llm.testing import start_mock_server


@pytest.fixture(scope="module")
def stall_url() -> Iterator[str]:
    """A mock whose timeout/stall faults hang for 2 s only."""
    url, stop = start_mock_server(MockConfig(stall_seconds=2.0))
    yield url
    stop()


def client(url: str, timeout: float = 5.0) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(base_url=url, api_key="x", max_retries=0, timeout=timeout)


def user(text: str) -> list[ChatCompletionMessageParam]:
    return [{"role": "user", "content": text}]


async def test_status_faults(mock_llm_url: str) -> None:
    async with client(mock_llm_url) as c:
        with pytest.raises(openai.InternalServerError) as err500:
            await c.chat.completions.create(model="m", messages=user("hi [[fault:500]]"))
        assert err500.value.status_code == 500
        assert isinstance(err500.value.body, dict) and err500.value.body["type"] == "server_error"
        with pytest.raises(openai.InternalServerError) as err503:
            await c.responses.create(model="m", input="hi [[fault:503]]", stream=True)
        assert err503.value.status_code == 503
        with pytest.raises(openai.RateLimitError) as err429:
            await c.responses.create(model="m", input="hi [[fault:429]]")
        assert err429.value.response.headers["retry-after"] == "0"
        assert isinstance(err429.value.body, dict)
        assert err429.value.body["code"] == "rate_limit_exceeded"
        assert {"message", "type", "code"} <= set(err429.value.body)


async def test_bad_json(mock_llm_url: str) -> None:
    async with client(mock_llm_url) as c:
        with pytest.raises(json.JSONDecodeError):
            await c.chat.completions.create(model="m", messages=user("hi [[fault:bad]]"))
        stream = await c.responses.create(model="m", input="hi [[fault:bad]]", stream=True)
        with pytest.raises(json.JSONDecodeError):
            async for _ in stream:
                pass


async def test_timeout_fault(stall_url: str) -> None:
    async with client(stall_url, timeout=0.5) as c:
        started = time.monotonic()
        with pytest.raises(openai.APITimeoutError):
            await c.chat.completions.create(model="m", messages=user("hi [[fault:timeout]]"))
        with pytest.raises(openai.APITimeoutError):
            await c.responses.create(model="m", input="hi [[fault:stall]]")
        assert time.monotonic() - started < 1.9


async def test_stall_mid_stream(stall_url: str) -> None:
    async with client(stall_url, timeout=0.5) as c:
        stream = await c.chat.completions.create(
            model="m",
            messages=user("one two three four five six [[fault:stall]]"),
            stream=True,
        )
        received: list[str] = []
        with pytest.raises(openai.APITimeoutError):
            async for chunk in stream:
                received.append(chunk.choices[0].delta.content or "")
        assert 0 < len(received) < 10
        assert "".join(received).startswith("Mock answer")


async def test_stall_ends_after_stall_seconds() -> None:
    url, stop = start_mock_server(MockConfig(stall_seconds=0.3))
    try:
        async with client(url) as c:
            started = time.monotonic()
            stream = await c.responses.create(
                model="m", input="a b c d [[fault:stall]]", stream=True
            )
            events = [event async for event in stream]
            assert time.monotonic() - started >= 0.3
            assert events[-1].type == "response.completed"
    finally:
        stop()


async def test_latency_marker_and_config() -> None:
    url, stop = start_mock_server(MockConfig(latency_ms=100, stream_delay_ms=20))
    try:
        async with client(url) as c:
            started = time.monotonic()
            result = await c.responses.create(model="m", input="hi [[latency:150]]")
            assert time.monotonic() - started >= 0.25
            assert result.output_text == "Mock answer to: hi"

            started = time.monotonic()
            stream = await c.chat.completions.create(
                model="m",
                messages=user("a b c"),
                stream=True,
            )
            arrivals = [time.monotonic() async for _ in stream]
            # 6 deltas ("Mock answer to: a b c") -> 5 gaps of 20 ms after 100 ms latency
            assert arrivals[-1] - started >= 0.1 + 5 * 0.02
    finally:
        stop()
    # The pacing alone (no latency): measured from the request, a lower bound that a slow
    # client cannot break (gaps between arrivals can shrink when the client falls behind).
    url, stop = start_mock_server(MockConfig(latency_ms=0, stream_delay_ms=40))
    try:
        async with client(url) as c:
            started = time.monotonic()
            stream = await c.chat.completions.create(model="m", messages=user("a b c"), stream=True)
            chunks = [chunk async for chunk in stream]
            assert time.monotonic() - started >= 5 * 0.04
            assert len(chunks) >= 6
    finally:
        stop()


async def test_a_client_gone_during_the_latency_leaves_no_ledger_entry() -> None:
    url, stop = start_mock_server()
    try:
        async with client(url, timeout=0.2) as c:
            with pytest.raises(openai.APITimeoutError):
                await c.responses.create(model="m", input="gone [[latency:500]]")
        # Started after the abandoned call and slower: answered after that call's latency ends.
        async with client(url) as c:
            await c.responses.create(model="m", input="stayed [[latency:600]]")
        ledger = httpx.get(f"{url}/_mock/ledger").json()
    finally:
        stop()
    assert [entry["user_text"] for entry in ledger] == ["stayed"]


async def test_random_faults_are_seeded() -> None:
    config = MockConfig(fault_rate=0.5, fault_status=503, seed=7)
    rng = random.Random(config.seed)
    expected = [rng.random() < config.fault_rate for _ in range(12)]
    url, stop = start_mock_server(config)
    try:
        async with httpx.AsyncClient(base_url=url.removesuffix("/v1")) as http:
            body = {"model": "m", "input": "hello"}
            statuses = [(await http.post("/v1/responses", json=body)).status_code for _ in expected]
    finally:
        stop()
    assert statuses == [503 if fault else 200 for fault in expected]
    assert 0 < statuses.count(503) < len(statuses)
