"""Quota steps that failed in Redis, tried again until they land.

A time-boxed Redis call that times out is ambiguous: Redis may never have run the script (the
client gave up before sending it, or dropped the connection with the command still queued),
or it ran it and only the reply was lost. Left alone, both corrupt the tenant's counters for
the rest of the window: a settlement that never ran leaves the reservation's estimate counted
instead of the real usage (a pruned reservation keeps its amount), and an admission or
reservation that did run, while the run went on in memory, stays counted in Redis with no one
to settle it.

Every step queued here is idempotent, so trying it again is always safe: a settlement applies
only while its reservation is open (the script removes it as it settles), a lease release is a
removal, and undoing a reservation that never reached Redis finds nothing to remove. Steps
are retried by one worker, oldest first, whenever the breaker lets calls through, until they
land or until `window_s` has passed (the reservation TTL: after it Redis prunes the
reservation and a settlement has nothing left to apply to). At shutdown each one gets a last
try.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from gateway.core.background import BackgroundTasks
from gateway.core.timebox import time_box
from gateway.limits.breaker import REDIS_ERRORS, RedisBreaker
from gateway.limits.redis_store import RedisQuotaStore

logger = logging.getLogger("gateway.limits")

MAX_PENDING = 10_000
"""Steps kept at most (the oldest is given up first): a long Redis outage costs bounded
memory, and what is given up is left to the TTL, as before these retries."""


@dataclass(slots=True)
class _Step:
    op: Callable[[RedisQuotaStore], Awaitable[None]]
    deadline: float
    """Event-loop time after which the step is given up."""


class RedisRetries:
    """The steps to try again on Redis, and the one worker trying them."""

    def __init__(
        self,
        store: RedisQuotaStore,
        breaker: RedisBreaker,
        *,
        timeout_s: float,
        window_s: float,
        tasks: BackgroundTasks,
    ) -> None:
        self.store = store
        self.breaker = breaker
        self.timeout_s = timeout_s
        self.window_s = window_s
        self.tasks = tasks
        self._pending: deque[_Step] = deque()
        self._worker: asyncio.Future[None] | None = None
        self._stopping = asyncio.Event()
        self.given_up = 0
        """Steps given up so far (their counters are left to the TTL)."""

    @property
    def pending(self) -> int:
        return len(self._pending)

    def add(self, op: Callable[[RedisQuotaStore], Awaitable[None]]) -> None:
        """Try `op` on Redis again later (it must be idempotent)."""
        if len(self._pending) >= MAX_PENDING:
            self._pending.popleft()
            self._give_up(1, "too many pending")
        loop = asyncio.get_running_loop()
        self._pending.append(_Step(op, loop.time() + self.window_s))
        if self._worker is None or self._worker.done():
            self._worker = self.tasks.run(self._work())

    async def _work(self) -> None:
        loop = asyncio.get_running_loop()
        while self._pending:
            step = self._pending[0]
            stopping = self._stopping.is_set()
            if loop.time() > step.deadline and not stopping:
                self._pending.popleft()
                self._give_up(1, "past the reservation TTL")
                continue
            if not stopping and not self.breaker.usable():
                await self._pause()
                continue
            try:
                async with time_box(self.timeout_s):
                    await step.op(self.store)
            except REDIS_ERRORS as exc:
                self.breaker.failed(exc)
                if stopping:
                    self._give_up(len(self._pending), "shutting down")
                    self._pending.clear()
                    return
                await self._pause()
            else:
                self._pending.popleft()
                self.breaker.succeeded()

    async def _pause(self) -> None:
        """Wait out the breaker's retry interval, or less if shutdown begins."""
        try:
            async with asyncio.timeout(self.breaker.retry_s):
                await self._stopping.wait()
        except TimeoutError:
            pass

    def _give_up(self, count: int, why: str) -> None:
        self.given_up += count
        logger.warning("limits: gave up settling %d step(s) in Redis (%s); TTL will", count, why)

    def stop(self) -> None:
        """Shutdown: every pending step gets one more try, then the worker ends."""
        self._stopping.set()

    async def wait(self) -> None:
        """Until the worker has ended (after `stop()`: each pending step tried once more)."""
        if self._worker is not None:
            await asyncio.gather(self._worker, return_exceptions=True)
