"""Write-behind usage recorder: runs hand over records; a background task writes them in batches.

It also keeps API keys' `last_used_at` current without a write per request: authenticated
requests mark their key in memory, and the marks are written at most every
`touch_interval_s` (and on shutdown).

Nothing is lost:
- a failed write keeps the batch and retries with backoff (counted in
  `gateway_usage_write_failures_total`);
- a record the database refuses is quarantined by the `BatchWriter` (`gateway.usage.writer`)
  instead of holding back the records behind it;
- the in-memory queue never holds more than `max_queue` records: new runs wait in
  `wait_for_room()` (at most `room_timeout_s`, then 503), and a record that finds the queue
  full anyway goes to the spill file;
- `close()` flushes for at most `shutdown_flush_s`, then writes what is left to the spill file
  (`gateway.usage.spill`), which is replayed at the next start, once the database answers.
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
from gateway.core.errors import ServiceUnavailableError
from gateway.usage.codec import record_json
from gateway.usage.journal import Journal, Segment
from gateway.usage.spill import SpillFile
from gateway.usage.writer import BatchWriter, WriteInterrupted
from observability.metrics import (
    USAGE_QUEUE_DEPTH,
    USAGE_REPLAYED,
    USAGE_SPILLED,
    USAGE_WRITE_FAILURES,
)
from tenants.api_key.repository import ApiKeyRepository
from tenants.models import UsageRecord

logger = logging.getLogger("gateway.usage")
MAX_BACKOFF_S = 5.0
REPLAY_INTERVAL_S = 5.0
"""How often a replay of the spill file is tried again after it failed."""


class UsageQueueFullError(ServiceUnavailableError):
    """The usage queue stayed full for the whole wait: the database is behind or down."""

    default_code = "usage_backlog"
    default_message = "Usage recording is behind; retry shortly."


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
        spill_path: str | None = None,
        room_timeout_s: float = 2.0,
        shutdown_flush_s: float = 5.0,
    ) -> None:
        self._db = db
        self._writer = BatchWriter(db, dead_letter_path=dead_letter_path)
        self._spill = SpillFile(spill_path) if spill_path else None
        self._journal = Journal(spill_path) if spill_path else None
        self._batch_size = batch_size
        self._interval = flush_interval_s
        self._max_queue = max_queue
        self._room_timeout_s = room_timeout_s
        self._shutdown_flush_s = shutdown_flush_s
        self._pending: deque[UsageRecord] = deque()
        self._segments: deque[Segment | None] = deque()
        """The journal segment of each pending record (None: not journaled)."""
        self._wake = asyncio.Event()
        self._room = asyncio.Event()
        self._room.set()
        self._task: asyncio.Task[None] | None = None
        self._closing = False
        self._lock = asyncio.Lock()
        self._touched: dict[str, datetime] = {}
        self._touch_interval_s = touch_interval_s
        self._last_touch_flush = time.monotonic()
        self._next_replay = 0.0
        self._next_adoption = 0.0
        self.written = 0
        self.replayed = 0

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run(), name="usage-writer")

    @property
    def depth(self) -> int:
        return len(self._pending)

    def record(self, record: UsageRecord) -> None:
        """Hand over one record (never blocks, never drops, never over `max_queue` in memory:
        a record that finds the queue full goes to the spill file)."""
        if len(self._pending) >= self._max_queue and self._spill_overflow(record):
            return
        self._pending.append(record)
        # On disk too until the database holds it: a killed process loses none.
        self._segments.append(self._journal.append(record) if self._journal else None)
        USAGE_QUEUE_DEPTH.set(len(self._pending))
        if len(self._pending) >= self._batch_size:
            self._wake.set()
        if len(self._pending) >= self._max_queue:
            self._room.clear()

    def _spill_overflow(self, record: UsageRecord) -> bool:
        # Rare (the queue is full only after a long outage): one small append, no fsync, on
        # the loop. Without a spill file the queue grows past its bound rather than drop.
        if self._spill is not None:
            try:
                self._spill.append([record], sync=False)
            except OSError:
                logger.exception("usage spill file %s not writable", self._spill.path)
            else:
                USAGE_SPILLED.labels("overflow").inc()
                return True
        logger.warning("usage queue full (%d): record kept in memory over the bound", self.depth)
        return False

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
            async with self._db.unit() as session:
                repository = ApiKeyRepository(session)
                for key_id, when in marks.items():
                    await repository.touch_last_used(key_id, when)
        except Exception:
            for key_id, when in marks.items():
                self._touched.setdefault(key_id, when)
            raise

    async def wait_for_room(self) -> None:
        """Back-pressure for new runs while the writer is behind: wait at most
        `room_timeout_s` for the queue to drain below its bound, else 503 with Retry-After."""
        if self._room.is_set():
            return
        try:
            async with asyncio.timeout(self._room_timeout_s):
                await self._room.wait()
        except TimeoutError:
            raise UsageQueueFullError(headers={"Retry-After": "2"}) from None

    async def flush(self) -> None:
        """Write everything pending now (used by tests and on shutdown)."""
        while self._pending:
            await self._write_batch()

    async def _run(self) -> None:
        failures = 0
        while not self._closing:
            try:
                if failures == 0 and time.monotonic() >= self._next_replay:
                    await self._replay_spill()
                async with asyncio.timeout(self._interval):
                    await self._wake.wait()
            except TimeoutError:
                pass
            except Exception:
                failures += 1
            self._wake.clear()
            try:
                # What is due now, not what arrives meanwhile: draining until the queue is
                # empty would chase every record that lands during a write with a batch of
                # its own (a few ms each, back to back) under steady traffic.
                due = len(self._pending)
                while due > 0 and self._pending:
                    due -= await self._write_batch()
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

    async def _write_batch(self) -> int:
        """Write the head of the queue; the number of records it settled."""
        # One writer at a time: the timer task and an explicit flush must not write the same
        # records twice.
        async with self._lock:
            if self._pending:
                return await self._write_head()
        return 0

    async def _write_head(self) -> int:
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
                self._settle_journal()
            self.written += settled - (self.quarantined - quarantined)
            USAGE_QUEUE_DEPTH.set(len(self._pending))
            if len(self._pending) < self._max_queue:
                self._room.set()
        return settled

    @property
    def quarantined(self) -> int:
        """Records the database refused (kept as dead letters, not in `written`)."""
        return self._writer.quarantined

    def _settle_journal(self) -> None:
        segment = self._segments.popleft()
        if self._journal is not None:
            self._journal.settle(segment)

    async def _replay_spill(self) -> None:
        """Write the spill file's records (claimed first, so one process replays each), with
        the journals of processes that stopped without a shutdown."""
        spill, journal = self._spill, self._journal
        if journal is not None and time.monotonic() >= self._next_adoption:
            self._next_adoption = time.monotonic() + REPLAY_INTERVAL_S
            await asyncio.to_thread(journal.adopt_orphans)
        if spill is None or not await asyncio.to_thread(spill.pending):
            return
        self._next_replay = time.monotonic() + REPLAY_INTERVAL_S
        async with self._lock:
            for claimed in await asyncio.to_thread(spill.claim):
                records = await asyncio.to_thread(spill.read, claimed)
                done = 0
                try:
                    for start in range(0, len(records), self._batch_size):
                        batch = records[start : start + self._batch_size]
                        try:
                            await self._writer.write(batch)
                        except WriteInterrupted as interrupted:
                            done += interrupted.settled
                            raise
                        done += len(batch)
                finally:
                    if done < len(records):  # the rest goes back for the next attempt
                        await asyncio.to_thread(spill.append, records[done:])
                    await asyncio.to_thread(spill.done, claimed)
                    self.replayed += done
                    USAGE_REPLAYED.inc(done)
                logger.info("replayed %d usage records from %s", len(records), spill.path)

    async def close(self) -> None:
        """Stop the timer, flush for at most `shutdown_flush_s`, spill what is left."""
        self._closing = True
        self._wake.set()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        try:
            async with asyncio.timeout(self._shutdown_flush_s):
                while self._pending or self._touched:
                    try:
                        await self.flush()
                        await self.flush_key_marks()
                    except Exception:
                        USAGE_WRITE_FAILURES.inc()
                        await asyncio.sleep(0.2)
        except TimeoutError:
            pass
        if self._pending:
            self._spill_at_shutdown()
        if self._journal is not None:
            self._journal.close()  # what is still pending stays there for the next process

    def _spill_at_shutdown(self) -> None:
        pending = list(self._pending)
        if self._spill is not None:
            try:
                self._spill.append(pending)
            except OSError:
                logger.exception("usage spill file %s not writable", self._spill.path)
            else:
                while self._pending:  # in the spill file now
                    self._pending.popleft()
                    self._settle_journal()
                USAGE_QUEUE_DEPTH.set(0)
                USAGE_SPILLED.labels("shutdown").inc(len(pending))
                logger.warning(
                    "shutdown: %d usage records spilled to %s (replayed at the next start)",
                    len(pending),
                    self._spill.path,
                )
                return
        # Last resort: each record in the log, so none is lost without a trace.
        logger.error("shutdown: %d usage records could not be written", len(pending))
        for record in pending:
            logger.error("unwritten usage record: %s", record_json(record))
