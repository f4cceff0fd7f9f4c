"""Write-behind usage recorder: runs hand over records; a background task writes them in batches.

It also keeps API keys' `last_used_at` current without a write per request: authenticated
requests mark their key in memory, and the marks are written at most every
`touch_interval_s` (and on shutdown).

Nothing is lost: a failed write keeps the batch and retries with backoff (counted in
`gateway_usage_write_failures_total`), and `close()` flushes what is left. A record the
database refuses is quarantined by the `BatchWriter` (see `gateway.usage.writer`) instead of
holding back the records behind it. The queue is bounded
by admission: new runs wait in `wait_for_room()` while `max_queue` records are pending, so
finishing runs never block or drop a record.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from datetime import datetime

from gateway.core.clock import utcnow
from gateway.core.db import Database
from gateway.usage.writer import BatchWriter, WriteInterrupted
from observability.metrics import USAGE_QUEUE_DEPTH, USAGE_WRITE_FAILURES
from tenants.api_key.repository import ApiKeyRepository
from tenants.models import UsageRecord

logger = logging.getLogger("gateway.usage")
MAX_BACKOFF_S = 5.0


class UsageRecorder:
    """Batches usage records into the database off the request path."""

    def __init__(
        self,
        db: Database,
        *,
        batch_size: int,
        flush_interval_s: float,
        max_queue: int,
        touch_interval_s: float = 30.0,
        dead_letter_path: str | None = None,
    ) -> None:
        self._db = db
        self._writer = BatchWriter(db, dead_letter_path=dead_letter_path)
        self._batch_size = batch_size
        self._interval = flush_interval_s
        self._max_queue = max_queue
        self._pending: deque[UsageRecord] = deque()
        self._wake = asyncio.Event()
        self._room = asyncio.Event()
        self._room.set()
        self._task: asyncio.Task[None] | None = None
        self._closing = False
        self._lock = asyncio.Lock()
        self._touched: dict[str, datetime] = {}
        self._touch_interval_s = touch_interval_s
        self._last_touch_flush = time.monotonic()
        self.written = 0

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run(), name="usage-writer")

    @property
    def depth(self) -> int:
        return len(self._pending)

    def record(self, record: UsageRecord) -> None:
        """Hand over one record (never blocks, never drops)."""
        self._pending.append(record)
        USAGE_QUEUE_DEPTH.set(len(self._pending))
        if len(self._pending) >= self._batch_size:
            self._wake.set()
        if len(self._pending) >= self._max_queue:
            self._room.clear()

    def mark_key_used(self, key_id: str) -> None:
        """Note that a key was used now (written later, in a batch)."""
        if key_id not in self._touched:
            self._touched[key_id] = utcnow()

    async def flush_key_marks(self) -> None:
        """Write the pending `last_used_at` marks."""
        self._last_touch_flush = time.monotonic()
        if not self._touched:
            return
        marks, self._touched = self._touched, {}
        try:
            async with self._db.session() as session:
                repository = ApiKeyRepository(session)
                for key_id, when in marks.items():
                    await repository.touch_last_used(key_id, when)
        except Exception:
            for key_id, when in marks.items():
                self._touched.setdefault(key_id, when)
            raise

    async def wait_for_room(self) -> None:
        """Back-pressure for new runs while the writer is behind."""
        if not self._room.is_set():
            await self._room.wait()

    async def flush(self) -> None:
        """Write everything pending now (used by tests and on shutdown)."""
        while self._pending:
            await self._write_batch()

    async def _run(self) -> None:
        failures = 0
        while not self._closing:
            try:
                async with asyncio.timeout(self._interval):
                    await self._wake.wait()
            except TimeoutError:
                pass
            self._wake.clear()
            try:
                while self._pending:
                    await self._write_batch()
                if time.monotonic() - self._last_touch_flush >= self._touch_interval_s:
                    await self.flush_key_marks()
                failures = 0
            except Exception:
                failures += 1
                USAGE_WRITE_FAILURES.inc()
                logger.warning(
                    "usage write failed; %d records kept for retry", self.depth, exc_info=True
                )
                await asyncio.sleep(min(MAX_BACKOFF_S, 0.1 * 2**failures))

    async def _write_batch(self) -> None:
        # One writer at a time: the timer task and an explicit flush must not write the same
        # records twice.
        async with self._lock:
            if self._pending:
                await self._write_head()

    async def _write_head(self) -> None:
        # The insert skips run ids already stored, so a batch retried after an ambiguous
        # failure (committed, but reported failed) is never counted twice.
        batch = [self._pending[i] for i in range(min(self._batch_size, len(self._pending)))]
        settled, quarantined = 0, self.quarantined
        try:
            await self._writer.write(batch)
            settled = len(batch)
        except WriteInterrupted as interrupted:
            settled = interrupted.settled
            raise
        finally:
            for _ in range(settled):
                self._pending.popleft()
            self.written += settled - (self.quarantined - quarantined)
            USAGE_QUEUE_DEPTH.set(len(self._pending))
            if len(self._pending) < self._max_queue:
                self._room.set()

    @property
    def quarantined(self) -> int:
        """Records the database refused (kept as dead letters, not in `written`)."""
        return self._writer.quarantined

    async def close(self, timeout_s: float = 10.0) -> None:
        """Stop the timer and flush what is left (bounded by `timeout_s`)."""
        self._closing = True
        self._wake.set()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        try:
            async with asyncio.timeout(timeout_s):
                while self._pending or self._touched:
                    try:
                        await self.flush()
                        await self.flush_key_marks()
                    except Exception:
                        USAGE_WRITE_FAILURES.inc()
                        await asyncio.sleep(0.2)
        except TimeoutError:
            logger.error("shutdown: %d usage records could not be written", self.depth)
