"""`POST /v1/chat/completions` as an application using the official `openai` client sees it.

Real components only: a real gateway server (uvicorn in a thread), the mock LLM over real
HTTP, the `openai` client (and httpx where a test reads headers or raw bytes).
"""

from __future__ import annotations

import asyncio
import sqlite3
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import httpx
import openai
import orjson
import pytest

from tests.conftest import make_settings
from tests.gateway.conftest import ADMIN, AGENT_SPEC
from tests.gateway.server import start_gateway_server
from tests.identity.conftest import claims, sign
from tests.waiting import wait_until

PROMPT = "What is 12*7? Use the calculator."
MESSAGES: list[Any] = [{"role": "user", "content": PROMPT}]


@dataclass
class Live:
    """A running gateway server and what a test needs to drive it."""

    url: str
    mock_url: str
    db_path: str
    tenant_ids: dict[str, str] = field(default_factory=dict)
    """Tenant id by API key."""

    def client(self, key: str) -> openai.AsyncOpenAI:
        # No retries: a test sees each answer of the gateway, not the client's second try.
        return openai.AsyncOpenAI(base_url=f"{self.url}/v1", api_key=key, max_retries=0)

    def http(self) -> httpx.AsyncClient:
        return httpx.AsyncClient(base_url=self.url, timeout=20)

    async def tenant(
        self, slug: str, *, agent: str = "assistant", limits: dict[str, int] | None = None
    ) -> str:
        """A tenant with one agent (and limits); returns its API key."""
        async with self.http() as c:
            r = await c.post("/admin/tenants", json={"slug": slug, "name": slug}, headers=ADMIN)
            assert r.status_code == 201, r.text
            tenant_id = r.json()["id"]
            if limits:
                r = await c.patch(
                    f"/admin/tenants/{tenant_id}", json={"limits": limits}, headers=ADMIN
                )
                assert r.status_code == 200, r.text
            r = await c.post(f"/admin/tenants/{tenant_id}/keys", json={"name": "k"}, headers=ADMIN)
            assert r.status_code == 201, r.text
            key: str = r.json()["key"]
            r = await c.put(
                f"/admin/tenants/{tenant_id}/agents/{agent}", json=AGENT_SPEC, headers=ADMIN
            )
            assert r.status_code == 201, r.text
        self.tenant_ids[key] = tenant_id
        return key

    async def jwt_for(self, key: str, sub: str) -> str:
        """An end-user JWT of the key's tenant (HS256, gateway-generated secret)."""
        tenant_id = self.tenant_ids[key]
        async with self.http() as c:
            r = await c.put(
                f"/admin/tenants/{tenant_id}/jwt",
                json={"mode": "hs256", "issuer": tenant_id},
                headers=ADMIN,
            )
            assert r.status_code == 200, r.text
        return sign(claims(tenant_id, sub=sub), r.json()["secret"], "HS256")

    async def usage_totals(self, key: str, runs: int) -> dict[str, int]:
        """This tenant's `GET /v1/usage` totals once `runs` runs are recorded."""
        deadline = time.monotonic() + 10
        async with self.http() as c:
            while True:
                r = await c.get("/v1/usage", headers={"Authorization": f"Bearer {key}"})
                totals: dict[str, int] = r.json()["totals"]
                if totals["runs"] >= runs or time.monotonic() > deadline:
                    return totals
                await asyncio.sleep(0.05)

    def ledger(self) -> list[dict[str, Any]]:
        return list(httpx.get(f"{self.mock_url}/_mock/ledger").json())

    def waiting(self) -> int:
        """How many model calls wait upstream (inside the mock's latency) right now."""
        return int(httpx.get(f"{self.mock_url}/_mock/waiting").json()["waiting"])

    def usage_record(self, run_id: str) -> dict[str, Any]:
        """The usage row of one run, read from the database (waits for the write-behind)."""
        deadline = time.monotonic() + 10
        while True:
            with sqlite3.connect(self.db_path) as db:
                db.row_factory = sqlite3.Row
                row = db.execute("SELECT * FROM usage_records WHERE run_id = ?", (run_id,))
                found = row.fetchone()
            if found is not None:
                return dict(found)
            assert time.monotonic() < deadline, f"no usage record for {run_id}"
            time.sleep(0.05)


@contextmanager
def serve(sqlite_url: str, mock_url: str, **overrides: Any) -> Iterator[Live]:
    settings = make_settings(sqlite_url, openai_base_url=mock_url, **overrides)
    base_url, stop = start_gateway_server(settings)
    try:
        yield Live(base_url, mock_url, sqlite_url.removeprefix("sqlite+aiosqlite:///"))
    finally:
        stop()


@pytest.fixture
def live(sqlite_url: str, mock_llm_base_url: str, upstream_api: str) -> Iterator[Live]:
    """A gateway server over each upstream API."""
    with serve(sqlite_url, mock_llm_base_url, upstream_api=upstream_api) as gw:
        yield gw


@pytest.fixture
def live_one(sqlite_url: str, mock_llm_base_url: str) -> Iterator[Live]:
    """A gateway server (for behaviour that does not depend on the upstream API)."""
    with serve(sqlite_url, mock_llm_base_url) as gw:
        yield gw


def run_id_of(completion_id: str) -> str:
    assert completion_id.startswith("chatcmpl-run_"), completion_id
    return completion_id.removeprefix("chatcmpl-")


async def test_create_returns_the_agents_answer_with_exact_usage(live: Live) -> None:
    key = await live.tenant("acme")
    before = len(live.ledger())
    async with live.client(key) as client:
        completion = await client.chat.completions.create(model="assistant", messages=MESSAGES)
    calls = live.ledger()[before:]
    assert len(calls) == 2, "a tool call, then the answer"
    assert completion.object == "chat.completion"
    assert completion.model == "assistant"
    assert completion.id.startswith("chatcmpl-run_")
    assert abs(completion.created - time.time()) < 60
    [choice] = completion.choices
    assert choice.index == 0 and choice.finish_reason == "stop"
    assert choice.message.role == "assistant"
    assert choice.message.tool_calls is None
    assert choice.message.content == "The calculator tool returned: 84"
    usage = completion.usage
    assert usage is not None
    assert usage.prompt_tokens == sum(c["input_tokens"] for c in calls)
    assert usage.completion_tokens == sum(c["output_tokens"] for c in calls)
    assert usage.total_tokens == usage.prompt_tokens + usage.completion_tokens
    totals = await live.usage_totals(key, 1)
    assert totals["runs"] == 1
    assert totals["requests"] == 2
    assert totals["input_tokens"] == usage.prompt_tokens
    assert totals["output_tokens"] == usage.completion_tokens
    assert totals["total_tokens"] == usage.total_tokens
    record = live.usage_record(run_id_of(completion.id))
    assert record["status"] == "completed" and record["agent"] == "assistant"


async def test_stream_gives_the_same_answer_and_usage_last(live: Live) -> None:
    key = await live.tenant("acme")
    async with live.client(key) as client:
        plain = await client.chat.completions.create(model="assistant", messages=MESSAGES)
        chunks = []
        async with asyncio.timeout(10):  # the stream ends on its own
            stream = await client.chat.completions.create(
                model="assistant",
                messages=MESSAGES,
                stream=True,
                stream_options={"include_usage": True},
            )
            async for chunk in stream:
                chunks.append(chunk)
    assert plain.usage is not None
    assert {c.object for c in chunks} == {"chat.completion.chunk"}
    assert {c.model for c in chunks} == {"assistant"}
    assert len({c.id for c in chunks}) == 1 and chunks[0].id != plain.id
    assert chunks[0].choices[0].delta.role == "assistant"
    content = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert content == plain.choices[0].message.content == "The calculator tool returned: 84"
    assert len([c for c in chunks if c.choices and c.choices[0].delta.content]) > 1
    assert all(c.choices[0].delta.tool_calls is None for c in chunks if c.choices)
    stops = [c for c in chunks if c.choices and c.choices[0].finish_reason == "stop"]
    assert len(stops) == 1
    last = chunks[-1]
    assert last.choices == [] and last.usage is not None
    assert all(c.usage is None for c in chunks[:-1])
    # The mock LLM is deterministic: the same prompt costs the same tokens.
    assert last.usage.prompt_tokens == plain.usage.prompt_tokens
    assert last.usage.completion_tokens == plain.usage.completion_tokens
    assert last.usage.total_tokens == plain.usage.total_tokens
    totals = await live.usage_totals(key, 2)
    assert totals["runs"] == 2
    assert totals["total_tokens"] == plain.usage.total_tokens + last.usage.total_tokens
    record = live.usage_record(run_id_of(last.id))
    assert record["status"] == "completed"
    assert record["input_tokens"] == last.usage.prompt_tokens
    assert record["output_tokens"] == last.usage.completion_tokens


async def test_raw_stream_frames_end_with_done(live_one: Live) -> None:
    key = await live_one.tenant("acme")
    body = {"model": "assistant", "messages": [{"role": "user", "content": "hello there"}]}
    async with live_one.http() as c:
        r = await c.post(
            "/v1/chat/completions",
            json={**body, "stream": True},
            headers={"Authorization": f"Bearer {key}"},
        )
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("text/event-stream")
    frames = [f for f in r.text.split("\n\n") if f]
    assert all(f.startswith("data: ") for f in frames), frames
    assert frames[-1] == "data: [DONE]"
    chunks = [orjson.loads(f[6:]) for f in frames[:-1]]
    assert all("usage" not in c for c in chunks), "no usage chunk unless include_usage"
    assert chunks[-1]["choices"] == [
        {"index": 0, "delta": {}, "finish_reason": "stop", "logprobs": None}
    ]
    text = "".join(c["choices"][0]["delta"].get("content", "") for c in chunks)
    assert text == "Mock answer to: hello there"


async def test_errors_as_an_openai_client_sees_them(live_one: Live) -> None:
    key = await live_one.tenant("acme")
    other_key = await live_one.tenant("other", agent="private-agent")
    async with live_one.client(key) as client:
        with pytest.raises(openai.NotFoundError) as missing:
            await client.chat.completions.create(model="no-such-agent", messages=MESSAGES)
        assert missing.value.code == "agent_not_found"
        assert missing.value.type == "not_found_error"
        assert missing.value.param == "model"  # the field that named it, as /v1/models says

        # A name no agent can have (a model's, say) is an unknown agent too.
        with pytest.raises(openai.NotFoundError) as model_name:
            await client.chat.completions.create(model="gpt-4.1-mini", messages=MESSAGES)
        assert model_name.value.code == "agent_not_found"
        assert model_name.value.param == "model"

        with pytest.raises(openai.UnprocessableEntityError) as refused:
            await client.chat.completions.create(
                model="assistant",
                messages=MESSAGES,
                tools=[{"type": "function", "function": {"name": "f"}}],
            )
        assert refused.value.param == "tools"
        assert refused.value.type == "invalid_request_error"
        assert "agent's configuration" in refused.value.message

        # Sampling parameters clients commonly send are accepted; the agent's settings decide.
        plain = await client.chat.completions.create(model="assistant", messages=MESSAGES)
        tuned = await client.chat.completions.create(
            model="assistant",
            messages=MESSAGES,
            temperature=0,
            top_p=1,
            seed=7,
            max_tokens=50,
            max_completion_tokens=50,
            presence_penalty=0,
            frequency_penalty=0,
            stop=["never"],
            parallel_tool_calls=False,
            store=False,
            response_format={"type": "text"},
            tools=[],
            logprobs=False,
        )
        assert tuned.choices[0].message.content == plain.choices[0].message.content
        with pytest.raises(openai.UnprocessableEntityError) as out_of_range:
            await client.chat.completions.create(
                model="assistant", messages=MESSAGES, temperature=3
            )
        assert out_of_range.value.param == "temperature"

        with pytest.raises(openai.NotFoundError) as foreign:
            await client.chat.completions.create(model="private-agent", messages=MESSAGES)
        assert foreign.value.code == "agent_not_found"

        with pytest.raises(openai.InternalServerError) as upstream:
            failing: Any = [{"role": "user", "content": "hi [[fault:500]]"}]
            await client.chat.completions.create(model="assistant", messages=failing)
        assert upstream.value.status_code == 502
        assert upstream.value.type == "upstream_error"

    async with live_one.client(other_key) as owner:
        own = await owner.chat.completions.create(model="private-agent", messages=MESSAGES)
        assert own.choices[0].message.content  # the agent exists: the 404 above hid it

    async with live_one.client("gw_" + "A" * 38) as stranger:
        with pytest.raises(openai.AuthenticationError) as denied:
            await stranger.chat.completions.create(model="assistant", messages=MESSAGES)
        assert denied.value.type == "authentication_error"


@pytest.mark.parametrize(
    ("extra", "param", "says"),
    [
        ({"logprobs": True}, "logprobs", "agent's configuration"),
        ({"tool_choice": "required"}, "tool_choice", "agent's configuration"),
        ({"max_tokens": 0}, "max_tokens", "greater than or equal to 1"),
        ({"tools": [{"type": "function", "function": {"name": "f"}}]}, "tools", "agent's"),
        ({"response_format": {"type": "json_object"}}, "response_format", "agent's"),
        ({"n": 2}, "n", "1"),
        ({"logit_bias_typo": 1}, "logit_bias_typo", "not permitted"),
        ({"stream_options": {"include_usage": True}}, "stream_options", "stream"),
        ({"stream": True, "stream_options": {"include_typo": True}}, None, "not permitted"),
        (
            {
                "messages": [
                    {"role": "user", "content": "x"},
                    {
                        "role": "assistant",
                        "content": "",
                        "tool_calls": [{"id": "c", "type": "function"}],
                    },
                ]
            },
            "messages.1",
            "agent's own tools run inside the gateway",
        ),
        ({"messages": [{"role": "tool", "content": "x"}]}, "messages.0.role", "developer"),
        # The wrong kind is named, not the fields it brought (`tool_call_id`, `image_url`).
        (
            {"messages": [{"role": "tool", "content": "x", "tool_call_id": "c"}]},
            "messages.0.role",
            "developer",
        ),
        (
            {
                "messages": [
                    {
                        "role": "user",
                        "content": [
                            {"type": "text", "text": "hi"},
                            {"type": "image_url", "image_url": {"url": "https://x/y.png"}},
                        ],
                    }
                ]
            },
            "messages.0.content.1.type",
            "'text'",
        ),
        (
            {"messages": [{"role": "user", "content": "x", "typo": 1}]},
            "messages.0.typo",
            "not permitted",
        ),
        ({"messages": []}, "messages", "at least 1"),
        ({"stream": "true"}, "stream", "boolean"),
        ({"stream": True, "stream_options": {"include_usage": 1}}, None, "boolean"),
        ({"metadata": {f"k{i}": "v" for i in range(17)}}, "metadata", "16"),
        # `stop`, text or a list of texts: the error names the form sent, never validator
        # internals (it once read `stop.function-after[functools.partial(<function …`).
        ({"stop": ["a", "b", "c", "d", "e"]}, "stop", "at most 4 items"),
        ({"stop": "x" * 300}, "stop", "at most 256 characters"),
        ({"stop": 5}, "stop", "valid string"),
        ({"stop": [1]}, "stop.0", "valid string"),
        ({"stop": True}, "stop", "valid string"),
        # JSON numbers only: `true` is not 1 (it was taken as one), nor a string a number.
        ({"n": True}, "n", "number"),
        ({"temperature": True}, "temperature", "number"),
        ({"temperature": "0.5"}, "temperature", "number"),
        ({"max_tokens": True}, "max_tokens", "number"),
        ({"seed": 1.5}, "seed", "integer"),
    ],
)
async def test_unsupported_requests_are_422_naming_the_parameter(
    live_one: Live, extra: dict[str, Any], param: str | None, says: str
) -> None:
    key = await live_one.tenant("acme")
    body = {"model": "assistant", "messages": MESSAGES, **extra}
    before = len(live_one.ledger())
    async with live_one.http() as c:
        r = await c.post(
            "/v1/chat/completions", json=body, headers={"Authorization": f"Bearer {key}"}
        )
    assert r.status_code == 422, r.text
    error = r.json()["error"]
    assert error["type"] == "invalid_request_error"
    if param is not None:
        assert error["param"] == param
    assert says in error["message"]
    assert "function" not in error["message"] and "<" not in error["message"]
    assert len(live_one.ledger()) == before, "refused before any model call"


async def test_message_forms_reach_the_agent(live_one: Live) -> None:
    """Text parts are joined by newlines; developer/system/assistant turns are accepted;
    `user`, `n: 1` and null agent-owned parameters are accepted and change nothing."""
    key = await live_one.tenant("acme")
    messages: list[Any] = [
        {"role": "developer", "content": "Answer in English."},
        {"role": "system", "content": [{"type": "text", "text": "Be kind."}]},
        {"role": "user", "content": "first question"},
        {"role": "assistant", "content": "first answer"},
        {
            "role": "user",
            "content": [{"type": "text", "text": "Hello"}, {"type": "text", "text": "world"}],
        },
    ]
    async with live_one.client(key) as client:
        completion = await client.chat.completions.create(
            model="assistant", messages=messages, user="end-user-7", n=1, temperature=None
        )
    assert completion.choices[0].message.content == "Mock answer to: Hello\nworld"


async def test_the_clients_own_answer_objects_can_be_sent_back(live_one: Live) -> None:
    """The common loop: `messages.append(reply.choices[0].message.model_dump())`, a `name` on
    a message, and `stream_options.include_obfuscation` are valid OpenAI requests."""
    key = await live_one.tenant("acme")
    messages: list[Any] = [{"role": "user", "content": "first question", "name": "bob"}]
    async with live_one.client(key) as client:
        first = await client.chat.completions.create(model="assistant", messages=messages)
        echoed = first.choices[0].message.model_dump()
        assert "refusal" in echoed and "tool_calls" in echoed
        refused = {**echoed, "content": None, "refusal": "I cannot help with that."}
        messages += [refused, echoed, {"role": "user", "content": "second question"}]
        second = await client.chat.completions.create(model="assistant", messages=messages)
        assert second.choices[0].message.content == "Mock answer to: second question"
        chunks = await client.chat.completions.create(
            model="assistant",
            messages=messages,
            stream=True,
            stream_options={"include_usage": True, "include_obfuscation": False},
        )
        text = "".join([c.choices[0].delta.content or "" async for c in chunks if c.choices])
    assert text == "Mock answer to: second question"


async def test_end_user_jwt_is_the_usage_user_not_the_user_field(live_one: Live) -> None:
    """A tenant JWT works as the client's `api_key`; the run's user is its `sub`, whatever
    the request's `user` field says."""
    key = await live_one.tenant("acme")
    token = await live_one.jwt_for(key, sub="end-user-42")
    async with live_one.client(token) as client:
        completion = await client.chat.completions.create(
            model="assistant", messages=MESSAGES, user="someone-else"
        )
    assert completion.choices[0].message.content == "The calculator tool returned: 84"
    record = live_one.usage_record(run_id_of(completion.id))
    assert record["user"] == "end-user-42"
    assert record["key_id"] is None


async def test_request_limit_is_429_with_retry_after(live_one: Live) -> None:
    key = await live_one.tenant("acme", limits={"requests_per_minute": 2})
    before = len(live_one.ledger())
    async with live_one.client(key) as client:
        for _ in range(2):
            await client.chat.completions.create(model="assistant", messages=MESSAGES)
        admitted = len(live_one.ledger())
        assert admitted - before == 4, "two runs of two model calls each"
        with pytest.raises(openai.RateLimitError) as limited:
            await client.chat.completions.create(model="assistant", messages=MESSAGES)
    assert limited.value.code == "requests_per_minute"
    headers = limited.value.response.headers
    assert 1 <= int(headers["retry-after"]) <= 60
    assert headers["x-ratelimit-limit-requests"] == "2"
    assert headers["x-ratelimit-remaining-requests"] == "0"
    assert len(live_one.ledger()) == admitted, "the refused request made no model call"


async def test_token_limit_headers_plain_and_streamed(live_one: Live) -> None:
    key = await live_one.tenant("acme", limits={"tokens_per_minute": 100_000})
    auth = {"Authorization": f"Bearer {key}"}
    async with live_one.http() as c:
        r = await c.post(
            "/v1/chat/completions", json={"model": "assistant", "messages": MESSAGES}, headers=auth
        )
        assert r.status_code == 200, r.text
        spent = r.json()["usage"]["total_tokens"]
        assert r.headers["x-ratelimit-limit-tokens"] == "100000"
        assert r.headers["x-ratelimit-reset-tokens"].endswith("s")
        r = await c.post(
            "/v1/chat/completions",
            json={"model": "assistant", "messages": MESSAGES, "stream": True},
            headers=auth,
        )
        assert r.status_code == 200
        assert r.headers["x-ratelimit-limit-tokens"] == "100000"
        # The second run was admitted after the first settled: its tokens are counted.
        assert int(r.headers["x-ratelimit-remaining-tokens"]) <= 100_000 - spent
        assert r.text.endswith("data: [DONE]\n\n")


@pytest.fixture
def live_failing(sqlite_url: str, mock_llm_base_url: str) -> Iterator[Live]:
    """Upstream timeout short and no retries, so a stalled upstream fails the run quickly."""
    with serve(sqlite_url, mock_llm_base_url, upstream_timeout_s=0.5, upstream_max_retries=0) as gw:
        yield gw


async def test_mid_stream_failure_is_an_error_chunk_and_a_failed_run(live_failing: Live) -> None:
    key = await live_failing.tenant("acme")
    messages: Any = [{"role": "user", "content": "tell me a long story [[fault:stall]]"}]
    chunks = []
    async with live_failing.client(key) as client:
        stream = await client.chat.completions.create(
            model="assistant", messages=messages, stream=True
        )
        with pytest.raises(openai.APIError) as failed:
            async with asyncio.timeout(10):
                async for chunk in stream:
                    chunks.append(chunk)
    assert failed.value.body == {
        "type": "upstream_timeout",
        "code": "upstream_timeout",
        "message": "The model upstream did not answer in time.",
        "param": None,
    }
    content = "".join(c.choices[0].delta.content or "" for c in chunks)
    assert content and "Mock answer to: tell me a long story".startswith(content), content
    assert content != "Mock answer to: tell me a long story", "the failure came mid-answer"
    assert not any(c.choices[0].finish_reason for c in chunks)
    record = live_failing.usage_record(run_id_of(chunks[0].id))
    assert record["status"] == "failed"

    # On the wire: the error is the last frame, and there is no [DONE] after it.
    async with live_failing.http() as c:
        r = await c.post(
            "/v1/chat/completions",
            json={"model": "assistant", "messages": messages, "stream": True},
            headers={"Authorization": f"Bearer {key}"},
        )
    frames = [f for f in r.text.split("\n\n") if f]
    assert orjson.loads(frames[-1].removeprefix("data: "))["error"]["code"] == "upstream_timeout"
    assert "data: [DONE]" not in frames


def test_client_disconnect_cancels_the_run_and_keeps_spent_tokens(live_one: Live) -> None:
    key = asyncio.run(live_one.tenant("live"))
    before = len(live_one.ledger())
    body = {
        "model": "assistant",
        "messages": [{"role": "user", "content": "Use the calculator on 6*7 [[latency:1500]]"}],
        "stream": True,
    }
    first: dict[str, Any] = {}
    started = time.monotonic()
    with (
        httpx.Client(base_url=live_one.url, timeout=10) as c,
        c.stream(
            "POST", "/v1/chat/completions", json=body, headers={"Authorization": f"Bearer {key}"}
        ) as r,
    ):
        lines = r.iter_lines()  # held: closing this iterator would close the connection
        for line in lines:
            if line.startswith("data: "):
                first = orjson.loads(line[6:])
                break
        # Tool calls are not streamed: wait until the first model call (the tool call) is
        # answered, then leave while the second call is still waiting upstream.
        assert wait_until(lambda: len(live_one.ledger()) > before, timeout=5, interval=0.02)
        assert wait_until(live_one.waiting, timeout=5, interval=0.02)
    assert first["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    record = live_one.usage_record(run_id_of(first["id"]))
    elapsed = time.monotonic() - started
    # The second call, already sent when the client left, is read when the upstream answers
    # it (the upstream had it and billed it): the record holds both calls exactly.
    calls = live_one.ledger()[before:]
    assert len(calls) == 2
    assert record["status"] == "cancelled"
    assert record["requests"] == 2
    assert record["input_tokens"] == sum(call["input_tokens"] for call in calls)
    assert record["output_tokens"] == sum(call["output_tokens"] for call in calls)
    # Cancelled, not completed: no further call or tool, recorded right after the second call.
    assert elapsed < 1.5 + 1.5 + 1.5
    metrics = httpx.get(f"{live_one.url}/metrics").text
    assert 'gateway_runs_total{agent="assistant",status="cancelled",tenant="live"}' in metrics


async def test_models_are_the_tenants_own_agents(live_one: Live) -> None:
    """`client.models.list()` / `.retrieve()`: the calling tenant's agents, never another's;
    an end user's JWT sees the same list."""
    acme = await live_one.tenant("acme", agent="assistant")
    other = await live_one.tenant("other", agent="secret-bot")
    async with live_one.http() as c:
        r = await c.put(
            f"/admin/tenants/{live_one.tenant_ids[acme]}/agents/billing",
            json=AGENT_SPEC,
            headers=ADMIN,
        )
        assert r.status_code == 201, r.text
    async with live_one.client(acme) as client:
        models = [m async for m in client.models.list()]
        assert [(m.id, m.object, m.owned_by) for m in models] == [
            ("assistant", "model", "acme"),
            ("billing", "model", "acme"),
        ]
        assert all(abs(m.created - time.time()) < 300 for m in models)
        assert (await client.models.retrieve("billing")).id == "billing"
        for name in ("secret-bot", "gpt-4.1-mini", "nope"):  # another tenant's; not an agent
            with pytest.raises(openai.NotFoundError) as raised:
                await client.models.retrieve(name)
            assert raised.value.code == "model_not_found"
        # A listed model is what a chat completion names.
        done = await client.chat.completions.create(model=models[1].id, messages=MESSAGES)
        assert done.model == "billing"
    async with live_one.client(await live_one.jwt_for(acme, "alice")) as user:
        assert [m.id async for m in user.models.list()] == ["assistant", "billing"]
    async with live_one.client(other) as owner:
        assert [m.id async for m in owner.models.list()] == ["secret-bot"]


async def test_an_answer_cut_at_max_tokens_finishes_with_length(live: Live) -> None:
    """OpenAI clients read `finish_reason: "length"` as "the answer was cut": an agent whose
    answer used all of its `max_tokens` says so, plain and streamed (it was always `stop`)."""
    key = await live.tenant("cut")
    tenant_id = live.tenant_ids[key]
    short = {**AGENT_SPEC, "tools": [], "model_settings": {"max_tokens": 4}}
    async with live.http() as c:
        r = await c.put(f"/admin/tenants/{tenant_id}/agents/short", json=short, headers=ADMIN)
        assert r.status_code == 201, r.text
    story = [{"role": "user", "content": "tell me a long story about the sea and the ships"}]
    async with live.client(key) as client:
        for model, expected in (("short", "length"), ("assistant", "stop")):
            plain = await client.chat.completions.create(model=model, messages=story)
            assert plain.choices[0].finish_reason == expected, plain
            stream = await client.chat.completions.create(model=model, messages=story, stream=True)
            ends = [c.choices[0].finish_reason async for c in stream if c.choices]
            assert [reason for reason in ends if reason] == [expected], ends
        assert plain.usage is not None and plain.usage.completion_tokens > 4
