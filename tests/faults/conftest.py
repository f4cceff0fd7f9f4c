"""Fixtures of the fault-matrix suite: the mock LLM (shared with the data-plane tests) and a
fault proxy in front of the real PostgreSQL.

Every module here sets `pytestmark = pytest.mark.faults`: `pytest -m faults` runs the suite
alone; the default run (`make test`, CI) includes it."""

from __future__ import annotations

from collections.abc import Iterator
from urllib.parse import urlsplit

import pytest

from tests.faults.proxy import FaultProxy
from tests.gateway.conftest import mock_llm_base_url  # noqa: F401 (re-exported fixture)


@pytest.fixture
def pg_proxy(postgres_url: str) -> Iterator[tuple[FaultProxy, str]]:
    """(proxy, database URL through it) in front of this session's PostgreSQL database."""
    parts = urlsplit(postgres_url)
    with FaultProxy(parts.hostname or "127.0.0.1", parts.port or 5432) as proxy:
        yield proxy, proxy.rewrite(postgres_url)
