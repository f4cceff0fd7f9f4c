"""Fixtures running the mock LLM as a real HTTP server on a free loopback port."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import openai
import pytest
import pytest_asyncio

from gateway.mock_llm import MockConfig
from gateway.mock_llm.testing import start_mock_server


@pytest.fixture(scope="session")
def mock_llm_url() -> Iterator[str]:
    """Base URL (``http://127.0.0.1:<port>/v1``) of a mock LLM with the default config."""
    url, stop = start_mock_server(MockConfig())
    yield url
    stop()


@pytest_asyncio.fixture
async def mock_client(mock_llm_url: str) -> AsyncIterator[openai.AsyncOpenAI]:
    """Official async client on the mock, no retries, strict response validation."""
    async with openai.AsyncOpenAI(
        base_url=mock_llm_url, api_key="x", max_retries=0, _strict_response_validation=True
    ) as client:
        yield client
