"""A Responses answer cut by the output limit is an answer, as on Chat Completions.

An upstream that stops at the call's `max_output_tokens` answers `status: "incomplete"`
(`incomplete_details.reason: "max_output_tokens"`; streamed, a terminal
`response.incomplete` event). The Agents SDK's Responses model raises `ModelBehaviorError` on
it, so the run would fail with 502 and the call's tokens, which the upstream billed, would be
lost; a Chat Completions upstream that stops there (`finish_reason: "length"`) gives the SDK
the cut text, which the run answers with. `CutAnswersComplete` wraps either upstream client
(lean or stock) and hands the SDK such an answer as completed, its `incomplete_details` kept:
the run answers with the text cut at the limit the agent set, and its tokens are recorded.
Any other incomplete answer (`content_filter`) and every failed one still fail the run.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncGenerator, AsyncIterator
from typing import Any

from openai.types.responses import Response, ResponseCompletedEvent, ResponseIncompleteEvent

CUT_BY_LIMIT = "max_output_tokens"


def cut_by_limit(response: Any) -> bool:
    """True for a Responses answer stopped at the output limit."""
    if not isinstance(response, Response) or response.status != "incomplete":
        return False
    details = response.incomplete_details
    return details is not None and details.reason == CUT_BY_LIMIT


def as_completed(response: Response) -> Response:
    """The cut answer as a completed one (`incomplete_details` says where it stopped)."""
    return response.model_copy(update={"status": "completed"})


async def _completed_events(events: AsyncIterator[Any]) -> AsyncGenerator[Any, None]:
    try:
        async for event in events:
            if isinstance(event, ResponseIncompleteEvent) and cut_by_limit(event.response):
                event = ResponseCompletedEvent(
                    type="response.completed",
                    response=as_completed(event.response),
                    sequence_number=event.sequence_number,
                )
            yield event
    finally:
        close = getattr(events, "aclose", None) or getattr(events, "close", None)
        if close is not None:
            await close()


class _RawStream:
    def __init__(self, raw: Any) -> None:
        self._raw = raw

    def __getattr__(self, name: str) -> Any:
        return getattr(self._raw, name)

    async def parse(self) -> AsyncIterator[Any]:
        return _completed_events(await self._raw.parse())


class _StreamingResponses:
    def __init__(self, inner: Any) -> None:
        self._inner = inner

    @contextlib.asynccontextmanager
    async def create(self, **kwargs: Any) -> AsyncIterator[_RawStream]:
        async with self._inner.create(**kwargs) as raw:
            yield _RawStream(raw)


class _Responses:
    def __init__(self, inner: Any) -> None:
        self._inner = inner
        self.with_streaming_response = _StreamingResponses(inner.with_streaming_response)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)

    async def create(self, **kwargs: Any) -> Any:
        answer = await self._inner.create(**kwargs)
        if cut_by_limit(answer):
            return as_completed(answer)
        return answer  # a stream (`stream=True`: the SDK's fallback path) goes through as is


class CutAnswersComplete:
    """An upstream client whose Responses answers cut by the output limit are completed ones;
    everything else is the wrapped client's."""

    def __init__(self, client: Any) -> None:
        self._client = client
        self.responses = _Responses(client.responses)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._client, name)

    def with_options(self, **options: Any) -> CutAnswersComplete:
        return CutAnswersComplete(self._client.with_options(**options))
