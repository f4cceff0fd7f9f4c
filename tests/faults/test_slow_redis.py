"""A slow-but-alive Redis (a private redis-server frozen with SIGSTOP) does not stall the
worker: the request limit waits for Redis on its own request only (time-boxed, then the
breaker's memory fallback), while a stream on the same worker keeps flowing."""

from __future__ import annotations

import itertools
import os
import shutil
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from gateway.mock_llm import MockConfig
from gateway.mock_llm.testing import start_mock_server
from tests.limits.conftest import RedisServer
from tests.observability.live import serve_gateway

pytestmark = pytest.mark.faults

REDIS_TIMEOUT_MS = 1500
WORDS = 30
DELAY_S = 0.1


@pytest.fixture
def slow_mock() -> Iterator[str]:
    """A mock LLM that streams one word every DELAY_S."""
    base_url, stop = start_mock_server(MockConfig(stream_delay_ms=DELAY_S * 1000))
    yield base_url
    stop()


def test_a_frozen_redis_stalls_only_the_requests_that_wait_for_it(
    tmp_path: Path, sqlite_template: Path, slow_mock: str
) -> None:
    redis_server = RedisServer(tmp_path)
    redis_server.start()
    assert redis_server.proc is not None
    db = tmp_path / "gateway.db"
    shutil.copy(sqlite_template, db)
    env = {
        "GATEWAY_REDIS_URL": redis_server.url,
        "GATEWAY_REDIS_TIMEOUT_MS": str(REDIS_TIMEOUT_MS),
        "GATEWAY_LIMITS_REDIS_RETRY_S": "5",
    }
    frozen = False
    try:
        with serve_gateway(
            tmp_path, f"sqlite+aiosqlite:///{db}", slow_mock, workers=1, **env
        ) as live:
            streamer = live.create_tenant("streamer")
            limited = live.create_tenant("limited", limits={"requests_per_minute": 1000})
            with live.client() as c:  # Redis answers: the window is counted there
                assert c.get("/v1/agents", headers=limited.headers).status_code == 200

            arrivals: list[float] = []
            three = threading.Event()

            def stream() -> None:
                text = " ".join(f"w{i}" for i in range(WORDS))
                body = {"input": text, "stream": True}
                with (
                    live.client() as c,
                    c.stream(
                        "POST", "/v1/agents/assistant/runs", json=body, headers=streamer.headers
                    ) as r,
                ):
                    for line in r.iter_lines():
                        if line == "event: output_text.delta":
                            arrivals.append(time.monotonic())
                            if len(arrivals) == 3:
                                three.set()

            reader = threading.Thread(target=stream)
            reader.start()
            assert three.wait(timeout=30), "the stream did not start"
            os.kill(redis_server.proc.pid, signal.SIGSTOP)
            frozen = True
            frozen_at = time.monotonic()
            with live.client() as c:
                r = c.get("/v1/agents", headers=limited.headers)
            waited = time.monotonic() - frozen_at
            reader.join(timeout=60)

        assert r.status_code == 200, r.text  # open mode: counted in memory after the time box
        assert waited >= REDIS_TIMEOUT_MS / 1000 * 0.9, "the limit check did wait for Redis"
        during = [t for t in arrivals if frozen_at <= t <= frozen_at + waited]
        assert len(during) >= 5, (waited, arrivals)
        gaps = [b - a for a, b in itertools.pairwise(arrivals)]
        assert max(gaps) < 0.75, f"the stream stalled for {max(gaps):.2f} s"
        assert len(arrivals) >= WORDS
    finally:
        if frozen and redis_server.proc is not None:
            os.kill(redis_server.proc.pid, signal.SIGCONT)
        redis_server.stop()
