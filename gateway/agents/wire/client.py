"""A lean OpenAI-compatible upstream client for the Agents SDK's stock models.

The SDK's `OpenAIResponsesModel` and `OpenAIChatCompletionsModel` take the client they call
as a constructor argument and use four things of it: `base_url`, `responses.create`,
`responses.with_streaming_response.create` and `chat.completions.create` (plus
`with_options` when SDK-managed retries are on). `LeanOpenAI` provides exactly those over
one pooled aiohttp session with orjson, so the models, their request building and their
response handling stay the SDK's own, and only the HTTP leg changes:

- the request body is the SDK's keyword arguments as JSON (omitted values dropped, pydantic
  values dumped as the stock client dumps them), without the stock client's per-call
  request-transform walk over the whole body;
- responses are parsed by pydantic-core (`wire.parse`), falling back to the stock parsing;
- retries, backoff, `Retry-After`, and the exceptions raised are the stock client's
  (`wire.errors`), so `gateway.runs.failures` maps them unchanged;
- redirects are never followed (a 3xx is an `APIStatusError`), as the tenant upstreams'
  stock clients are configured.

`GATEWAY_UPSTREAM_CLIENT=openai` selects the stock `AsyncOpenAI` instead; the conformance
test (tests/gateway/test_upstream_conformance.py) runs the same scenarios through both.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncGenerator, Callable, Mapping
from typing import Any

import aiohttp
import httpx2
import openai
import orjson
from openai import NotGiven, Omit
from openai._streaming import SSEDecoder
from openai.types.chat import ChatCompletion, ChatCompletionChunk
from openai.types.responses import Response

from gateway.agents.wire.errors import retry_delay_s, should_retry, status_error
from gateway.agents.wire.parse import ModelT, parse_model, parse_stream_event
from gateway.core.egress import refusal_of
from observability.metrics import record_upstream_retry

_HEADERS = {
    "Accept": "application/json",
    "Content-Type": "application/json",
    "User-Agent": f"AsyncOpenAI/Python {openai.__version__}",
}
_OPTIONS = ("extra_headers", "extra_query", "extra_body", "timeout")


def _json_default(value: Any) -> Any:
    if isinstance(value, openai.BaseModel):  # e.g. ModelSettings.reasoning
        return value.model_dump(mode="json", exclude_unset=True)
    if isinstance(value, Mapping):
        return dict(value)
    if hasattr(value, "__iter__"):
        return list(value)
    raise TypeError(f"cannot send {type(value).__name__} upstream")


def request_body(kwargs: dict[str, Any]) -> bytes:
    """The JSON body of a create call: omitted values dropped, `extra_body` merged in."""
    body = {k: v for k, v in kwargs.items() if k not in _OPTIONS and not _omitted(v)}
    extra = kwargs.get("extra_body")
    if isinstance(extra, Mapping):
        body.update(extra)
    return orjson.dumps(body, default=_json_default)


def _omitted(value: object) -> bool:
    return isinstance(value, NotGiven | Omit)


class LeanOpenAI:
    """The part of `AsyncOpenAI` the Agents SDK's models use, over one aiohttp session."""

    def __init__(
        self,
        *,
        api_key: str,
        base_url: str,
        timeout: float,
        max_retries: int,
        session_factory: Callable[[], aiohttp.ClientSession],
    ) -> None:
        self.api_key = api_key
        self.base_url = httpx2.URL(base_url.rstrip("/") + "/")
        self.timeout = timeout
        self.max_retries = max_retries
        self.websocket_base_url = None
        self._session_factory = session_factory
        self._session: aiohttp.ClientSession | None = None
        self._owner: LeanOpenAI | None = None  # set on `with_options` views
        self._urls: dict[str, str] = {}
        self._client_timeout = aiohttp.ClientTimeout(
            total=None, connect=None, sock_connect=timeout, sock_read=timeout
        )
        self._headers = _HEADERS | {"Authorization": f"Bearer {api_key}"}
        self.responses = _Responses(self)
        self.chat = _Chat(self)

    def with_options(self, *, max_retries: int | None = None, **_: Any) -> LeanOpenAI:
        """A view of this client with other retries (the SDK's own retry policy asks for 0);
        it shares the pooled session."""
        clone = object.__new__(LeanOpenAI)
        clone.__dict__.update(self.__dict__)
        clone.max_retries = self.max_retries if max_retries is None else max_retries
        clone.responses = _Responses(clone)
        clone.chat = _Chat(clone)
        clone._owner = self._owner or self
        return clone

    def session(self) -> aiohttp.ClientSession:
        owner = self._owner or self
        if owner._session is None or owner._session.closed:
            owner._session = owner._session_factory()
        return owner._session

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    def url(self, path: str) -> str:
        """The endpoint's URL (joined once per path)."""
        url = self._urls.get(path)
        if url is None:
            url = self._urls[path] = str(self.base_url.join(path))
        return url

    async def send(self, path: str, kwargs: dict[str, Any]) -> _Answer:
        """POST one create call with the stock client's retries; a 2xx answer, open."""
        url = self.url(path)
        query = kwargs.get("extra_query")
        if query:
            url = str(httpx2.URL(url).copy_merge_params(query))
        body = request_body(kwargs)
        headers = self._headers
        extra = kwargs.get("extra_headers")
        if extra:
            headers = headers | {k: v for k, v in extra.items() if not _omitted(v)}
        sent = _Sent(url, headers)
        retries = 0
        model = str(kwargs.get("model", ""))
        while True:
            try:
                response = await self.session().post(
                    url,
                    data=body,
                    headers=headers,
                    timeout=self._client_timeout,
                    allow_redirects=False,
                )
            except (TimeoutError, aiohttp.ServerTimeoutError) as exc:
                if retries < self.max_retries:
                    record_upstream_retry(model, "timeout")
                    await asyncio.sleep(retry_delay_s(retries, None))
                    retries += 1
                    continue
                raise openai.APITimeoutError(request=sent.request()) from exc
            except aiohttp.ClientError as exc:
                # The egress guard's refusal is final: retrying it only waits the backoff.
                if retries < self.max_retries and refusal_of(exc) is None:
                    record_upstream_retry(model, "unreachable")
                    await asyncio.sleep(retry_delay_s(retries, None))
                    retries += 1
                    continue
                raise openai.APIConnectionError(request=sent.request()) from exc
            if response.status < 300:
                return _Answer(sent, response)
            headers_in = response.headers
            try:
                content = await response.read()
            except (TimeoutError, aiohttp.ClientError):
                content = b""
            finally:
                response.release()
            if retries < self.max_retries and should_retry(response.status, headers_in):
                record_upstream_retry(model, str(response.status))
                await asyncio.sleep(retry_delay_s(retries, headers_in))
                retries += 1
                continue
            raise status_error(sent.request(), response.status, headers_in, content)


class _Sent:
    """What was sent, for the `httpx2.Request` an openai exception carries (built only then)."""

    __slots__ = ("headers", "url")

    def __init__(self, url: str, headers: dict[str, str]) -> None:
        self.url = url
        self.headers = headers

    def request(self) -> httpx2.Request:
        return httpx2.Request("POST", self.url, headers=self.headers)


class _Answer:
    """A 2xx upstream answer: its body read as one model, or as a stream of SSE events."""

    def __init__(self, sent: _Sent, response: aiohttp.ClientResponse) -> None:
        self.sent = sent
        self.response = response
        self.request_id: str | None = response.headers.get("x-request-id")

    async def model(self, cast_to: type[ModelT]) -> ModelT:
        try:
            content = await self.response.read()
        except (TimeoutError, aiohttp.ServerTimeoutError) as exc:
            raise openai.APITimeoutError(request=self.sent.request()) from exc
        except aiohttp.ClientError as exc:
            raise openai.APIConnectionError(request=self.sent.request()) from exc
        finally:
            self.response.release()
        parsed = parse_model(cast_to, orjson.loads(content))
        parsed._request_id = self.request_id
        return parsed

    async def events(self, parse: Callable[[Any], Any]) -> AsyncGenerator[Any, None]:
        """The SSE data events as objects; `[DONE]` ends the stream, an `error` payload raises
        `openai.APIError` (as the stock stream does), a read timeout `APITimeoutError`."""
        try:
            async for sse in SSEDecoder().aiter_bytes(self.response.content.iter_any()):
                if sse.data.startswith("[DONE]"):
                    break
                data = orjson.loads(sse.data)
                if isinstance(data, dict) and data.get("error"):
                    error = data["error"]
                    message = error.get("message") if isinstance(error, dict) else None
                    if not isinstance(message, str) or not message:
                        message = "An error occurred during streaming"
                    raise openai.APIError(message, self.sent.request(), body=error)
                yield parse(data)
        except (TimeoutError, aiohttp.ServerTimeoutError) as exc:
            raise openai.APITimeoutError(request=self.sent.request()) from exc
        except aiohttp.ClientPayloadError as exc:
            raise openai.APIConnectionError(request=self.sent.request()) from exc
        finally:
            self.response.release()

    def close(self) -> None:
        self.response.release()


class _EventStream:
    """An async iterator of parsed events that also carries the HTTP answer (`response`,
    whose headers the SDK reads for the request id) and closes it on `aclose`."""

    def __init__(self, answer: _Answer, parse: Callable[[Any], Any]) -> None:
        self.response = answer.response
        self._answer = answer
        self._events = answer.events(parse)

    def __aiter__(self) -> _EventStream:
        return self

    async def __anext__(self) -> Any:
        return await self._events.__anext__()

    async def aclose(self) -> None:
        await self._events.aclose()
        self._answer.close()

    close = aclose


class _Responses:
    def __init__(self, client: LeanOpenAI) -> None:
        self._client = client
        self.with_streaming_response = _StreamingResponses(client)

    async def create(self, **kwargs: Any) -> Any:
        answer = await self._client.send("responses", kwargs)
        if kwargs.get("stream") is True:
            return _EventStream(answer, parse_stream_event)
        return await answer.model(Response)


class _StreamingResponses:
    """`responses.with_streaming_response.create(...)`: a context manager whose value has
    `request_id` and `parse()` (the event stream), as the SDK uses it."""

    def __init__(self, client: LeanOpenAI) -> None:
        self._client = client

    def create(self, **kwargs: Any) -> contextlib.AbstractAsyncContextManager[_RawStream]:
        return _RawStreamContext(self._client, kwargs)


class _RawStream:
    def __init__(self, answer: _Answer) -> None:
        self.request_id = answer.request_id
        self.stream = _EventStream(answer, parse_stream_event)

    async def parse(self) -> _EventStream:
        return self.stream


class _RawStreamContext(contextlib.AbstractAsyncContextManager["_RawStream"]):
    def __init__(self, client: LeanOpenAI, kwargs: dict[str, Any]) -> None:
        self._client = client
        self._kwargs = kwargs
        self._raw: _RawStream | None = None

    async def __aenter__(self) -> _RawStream:
        self._raw = _RawStream(await self._client.send("responses", self._kwargs))
        return self._raw

    async def __aexit__(self, *exc_info: object) -> None:
        if self._raw is not None:
            await self._raw.stream.aclose()


class _Completions:
    def __init__(self, client: LeanOpenAI) -> None:
        self._client = client

    async def create(self, **kwargs: Any) -> Any:
        answer = await self._client.send("chat/completions", kwargs)
        if kwargs.get("stream") is True:
            return _EventStream(answer, lambda data: parse_model(ChatCompletionChunk, data))
        return await answer.model(ChatCompletion)


class _Chat:
    def __init__(self, client: LeanOpenAI) -> None:
        self.completions = _Completions(client)
