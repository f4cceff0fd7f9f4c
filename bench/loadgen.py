"""Closed-loop HTTP load generator (asyncio + aiohttp), the fallback when `wrk` is absent.

N connections each send requests back to back for D seconds. Only responses that arrive
before the deadline are counted (like wrk); each one's latency is recorded. A response is
an error when its status is not 200, when the connection fails, or (with `expect`) when a
200 body lacks one of the expected byte strings or does not end as expected. With `ttfb`,
the time to the first body chunk (for a streamed answer: the first SSE event) is recorded
as well: the body is then read chunk by chunk as it arrives instead of in one read.

    python -m bench.loadgen --url http://127.0.0.1:8000/v1/agents/assistant/runs \
        --body '{"input": "hi"}' --header 'Authorization: Bearer …' -c 32 -d 10 \
        [--expect '"status":"completed"'] [--ttfb]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import time
from collections.abc import Callable, Coroutine, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, TypeVar

import aiohttp

REQUEST_TIMEOUT_S = 30.0
T = TypeVar("T")


@dataclass
class LoadResult:
    """One load point: counts, throughput and latency percentiles."""

    tool: str
    connections: int
    duration_s: float
    requests: int = 0
    """Responses received before the deadline (any status)."""
    non_200: int = 0
    incorrect: int = 0
    """200 responses whose body lacks the expected bytes."""
    socket_errors: int = 0
    p50_ms: float | None = None
    p99_ms: float | None = None
    statuses: dict[str, int] = field(default_factory=dict)
    ttfb_p50_ms: float | None = None
    """Time to the first body chunk (measured with `ttfb` only), over the 200 answers."""
    ttfb_p99_ms: float | None = None

    @property
    def errors(self) -> int:
        return self.non_200 + self.incorrect + self.socket_errors

    @property
    def ok(self) -> int:
        return self.requests - self.non_200 - self.incorrect

    @property
    def rps(self) -> float:
        return self.requests / self.duration_s if self.duration_s > 0 else 0.0

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "errors": self.errors, "ok": self.ok, "rps": self.rps}


def percentile(sorted_values: list[float], q: float) -> float | None:
    """Nearest-rank percentile of an ascending list (q in 0..1)."""
    if not sorted_values:
        return None
    rank = min(len(sorted_values) - 1, max(0, math.ceil(q * len(sorted_values)) - 1))
    return sorted_values[rank]


@dataclass(frozen=True)
class Expect:
    """What every 200 body must be: contain each of `contains`, and (SSE) end with `ends_with`
    (trailing whitespace ignored)."""

    contains: tuple[bytes, ...] = ()
    ends_with: bytes | None = None

    def matches(self, body: bytes) -> bool:
        if any(e not in body for e in self.contains):
            return False
        return self.ends_with is None or body.rstrip().endswith(self.ends_with)


ExpectArg = Expect | bytes | Sequence[bytes] | None


def expectation(expect: ExpectArg) -> Expect:
    """`expect` as an `Expect` (bytes: must contain them; a sequence: must contain each)."""
    if expect is None:
        return Expect()
    if isinstance(expect, Expect):
        return expect
    if isinstance(expect, bytes):
        return Expect((expect,))
    return Expect(tuple(expect))


def _ms(values: list[float], q: float) -> float | None:
    value = percentile(values, q)
    return value * 1000 if value is not None else None


async def run_load(
    url: str,
    body: bytes,
    headers: dict[str, str],
    *,
    connections: int,
    duration_s: float,
    expect: ExpectArg = None,
    ttfb: bool = False,
) -> LoadResult:
    """Drive `url` with `connections` closed-loop clients for `duration_s` seconds."""
    result = LoadResult(tool="loadgen", connections=connections, duration_s=duration_s)
    expected = expectation(expect)
    latencies: list[float] = []
    first_bytes: list[float] = []
    statuses: dict[str, int] = {}
    send_headers = {"Content-Type": "application/json", **headers}
    connector = aiohttp.TCPConnector(limit=connections)
    timeout = aiohttp.ClientTimeout(total=REQUEST_TIMEOUT_S)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
        deadline = time.perf_counter() + duration_s

        async def client() -> None:
            while (started := time.perf_counter()) < deadline:
                first = 0.0
                try:
                    async with session.post(url, data=body, headers=send_headers) as resp:
                        if ttfb:
                            chunks = [await resp.content.readany()]
                            first = time.perf_counter()
                            while chunk := await resp.content.readany():
                                chunks.append(chunk)
                            data = b"".join(chunks)
                        else:
                            data = await resp.read()
                        status = resp.status
                except (aiohttp.ClientError, TimeoutError):
                    if time.perf_counter() < deadline:
                        result.socket_errors += 1
                        await asyncio.sleep(0.01)  # no hot spin on a refused connection
                    continue
                finished = time.perf_counter()
                if finished > deadline:
                    return
                result.requests += 1
                latencies.append(finished - started)
                statuses[str(status)] = statuses.get(str(status), 0) + 1
                if status != 200:
                    result.non_200 += 1
                elif not expected.matches(data):
                    result.incorrect += 1
                elif ttfb:
                    first_bytes.append(first - started)

        clients = [asyncio.ensure_future(client()) for _ in range(connections)]
        try:
            await asyncio.wait_for(asyncio.gather(*clients), duration_s + REQUEST_TIMEOUT_S + 5)
        finally:
            for task in clients:
                task.cancel()
    latencies.sort()
    first_bytes.sort()
    result.statuses = statuses
    result.p50_ms, result.p99_ms = _ms(latencies, 0.50), _ms(latencies, 0.99)
    if ttfb:
        result.ttfb_p50_ms, result.ttfb_p99_ms = _ms(first_bytes, 0.50), _ms(first_bytes, 0.99)
    return result


def run_sync(coro: Coroutine[Any, Any, T]) -> T:
    """Run on uvloop when installed (less client CPU per request), else asyncio."""
    factory: Callable[[], asyncio.AbstractEventLoop] | None = None
    try:
        import uvloop

        factory = uvloop.new_event_loop
    except ImportError:
        pass
    with asyncio.Runner(loop_factory=factory) as runner:
        return runner.run(coro)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.loadgen", description=__doc__)
    parser.add_argument("--url", required=True)
    parser.add_argument("--body", default="{}", help="JSON body of every POST")
    parser.add_argument("--header", action="append", default=[], help="'Name: value'")
    parser.add_argument("-c", "--connections", type=int, default=1)
    parser.add_argument("-d", "--duration", type=float, default=10.0)
    parser.add_argument(
        "--expect", action="append", default=[], help="bytes every 200 body must contain (repeat)"
    )
    parser.add_argument("--expect-end", default=None, help="bytes every 200 body must end with")
    parser.add_argument("--ttfb", action="store_true", help="also time the first body chunk")
    args = parser.parse_args(argv)
    headers = dict(h.split(":", 1) for h in args.header)
    result = run_sync(
        run_load(
            args.url,
            args.body.encode(),
            {k.strip(): v.strip() for k, v in headers.items()},
            connections=args.connections,
            duration_s=args.duration,
            expect=Expect(
                tuple(e.encode() for e in args.expect),
                args.expect_end.encode() if args.expect_end else None,
            ),
            ttfb=args.ttfb,
        )
    )
    print(json.dumps(result.as_dict(), indent=2))


if __name__ == "__main__":
    main()
