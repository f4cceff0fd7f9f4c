"""`time_box`: an `asyncio.timeout` for calls to a fast dependency (Redis) that does not blame
the dependency for the event loop's own lateness.

A busy event loop (a burst of requests, a loaded host) runs its timers late, and uvloop runs
due timers before it reads the sockets: a plain `asyncio.timeout(0.1)` then cancels a Redis
call whose answer has been waiting in the socket, and the breaker wrongly takes Redis for
down. Here, when the deadline's timer runs late (the loop was busy, not only the dependency
slow), the deadline is moved once by the same amount, so the answer already received is read
first. A dependency that really stalls is still cut at the deadline when the loop is on time,
and at most twice the timeout (plus the loop's lag) when it is not.
"""

from __future__ import annotations

import asyncio
from types import TracebackType

LATE_S = 0.005
"""A deadline timer running later than this means the loop was busy (timers are precise to
about a millisecond otherwise)."""


def time_box(seconds: float) -> TimeBox:
    """`async with time_box(seconds):` raises TimeoutError when the block outlasts it."""
    return TimeBox(seconds)


class TimeBox:
    """The context manager of `time_box`."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self._timeout = asyncio.timeout(None)
        self._handle: asyncio.TimerHandle | None = None
        self._extended = False
        self._deadline = 0.0

    async def __aenter__(self) -> TimeBox:
        await self._timeout.__aenter__()
        loop = asyncio.get_running_loop()
        self._deadline = loop.time() + self.seconds
        self._handle = loop.call_at(self._deadline, self._expire)
        return self

    def _expire(self) -> None:
        loop = asyncio.get_running_loop()
        now = loop.time()
        if not self._extended and now - self._deadline > LATE_S:
            self._extended = True
            self._deadline = now + self.seconds
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
