"""Tasks a service runs beside its requests, drained at shutdown.

Two kinds: work a request starts that must finish even if that request is cancelled (a client
gone: a lease release, a lock release), and one periodic pass (renewing what this replica
holds) that logs a failed pass and goes on rather than stopping for good.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable

logger = logging.getLogger("gateway.background")


class BackgroundTasks:
    """One service's background work; `drain()` it at shutdown."""

    def __init__(self, name: str) -> None:
        self.name = name
        self._running: set[asyncio.Task[None]] = set()
        self._periodic: asyncio.Task[None] | None = None

    def run(self, work: Awaitable[None]) -> asyncio.Future[None]:
        """Run `work` in its own task (kept until done); await the result to wait for it."""
        task = asyncio.ensure_future(work)
        self._running.add(task)
        task.add_done_callback(self._running.discard)
        return task

    def every(self, interval_s: float, one_pass: Callable[[], Awaitable[None]]) -> None:
        """Call `one_pass` every `interval_s` seconds until `drain()`."""

        async def repeat() -> None:
            while True:
                await asyncio.sleep(interval_s)
                try:
                    await one_pass()
                except Exception:  # never let one bad pass stop the next ones
                    logger.exception("%s: periodic pass failed", self.name)

        self._periodic = asyncio.get_running_loop().create_task(repeat(), name=self.name)

    async def drain(self) -> None:
        """Stop the periodic pass and wait for the work still running."""
        if self._periodic is not None:
            self._periodic.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._periodic
        if self._running:
            await asyncio.gather(*self._running, return_exceptions=True)
