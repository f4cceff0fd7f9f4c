"""`time_box`: an `asyncio.timeout` for calls to a fast dependency (Redis) that does not blame
the dependency for the event loop's own lateness.

A busy event loop (a burst of requests, a loaded host) runs its timers late, and uvloop runs
due timers before it reads the sockets: a plain `asyncio.timeout(0.1)` then cancels a Redis
call whose answer has been waiting in the socket, and the breaker wrongly takes Redis for
down (a synchronous client, which blocks the loop instead, never saw that lateness). Here,
when the deadline's timer runs late (the loop was busy, not only the dependency slow), the
deadline moves by the timeout again, so the answer already received is read first; at most
until `HARD_FACTOR` times the timeout has passed. A dependency that stalls is cut at the
deadline whenever the loop is on time, and after `HARD_FACTOR` x the timeout in any case.
"""

from __future__ import annotations

import asyncio
from types import TracebackType

LATE_S = 0.005
"""A deadline timer running later than this means the loop was busy (timers are precise to
about a millisecond otherwise)."""
HARD_FACTOR = 10
"""However late the loop, a time box ends after this many times its timeout."""


def time_box(seconds: float) -> TimeBox:
    """`async with time_box(seconds):` raises TimeoutError when the block outlasts it."""
    return TimeBox(seconds)


class TimeBox:
    """The context manager of `time_box`."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self._timeout = asyncio.timeout(None)
        self._handle: asyncio.TimerHandle | None = None
        self._deadline = 0.0
        self._hard = 0.0

    async def __aenter__(self) -> TimeBox:
        await self._timeout.__aenter__()
        loop = asyncio.get_running_loop()
        now = loop.time()
        self._deadline = now + self.seconds
        self._hard = now + self.seconds * HARD_FACTOR
        self._handle = loop.call_at(self._deadline, self._expire)
        return self

    def _expire(self) -> None:
        loop = asyncio.get_running_loop()
        now = loop.time()
        if now - self._deadline > LATE_S and now < self._hard:
            self._deadline = min(now + self.seconds, self._hard)
            self._handle = loop.call_at(self._deadline, self._expire)
            return
        self._timeout.reschedule(now)  # cancels the block; TimeoutError at its exit

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._handle is not None:
            self._handle.cancel()
        await self._timeout.__aexit__(exc_type, exc, tb)
