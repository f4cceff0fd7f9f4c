"""The usage journal: every record on local disk from the moment a run hands it over until the
database holds it, so a process killed outright (SIGKILL, the OOM killer) loses none.

The recorder keeps records in memory and writes them in batches (`gateway.usage.recorder`); a
clean stop flushes them or spills them to the spill file (`gateway.usage.spill`). A killed
process runs no shutdown, so without the journal the records of its last flush interval, runs
its clients already had answers for, would be gone.

Each process appends the records it queues to a segment of its own,
`<spill path>.journal-<pid>-<hex>`, one JSON line each (`os.write`, no fsync: the page cache
outlives the process, not the host). It holds an exclusive `flock` on every segment it has
open, for as long as it has it open. When all of a segment's records are in the database, the
segment is emptied (the current one) or removed (an older one); segments rotate every
`ROTATE_LINES` records, so one with a record stuck behind an outage does not hold the others.

A segment whose lock can be taken has no living owner: `adopt_orphans` (called by the
recorder at start and every few seconds after) renames it into a claim of the spill file,
which the spill's replay writes through the batch writer; a run already stored is skipped, so
a record that had in fact reached the database before the kill is never counted twice. Any
process sharing the spill path adopts it: the replica's own next start, or another worker or
replica of the same host.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import time
import uuid
from pathlib import Path

from gateway.usage.codec import record_json
from gateway.usage.spill import CLAIM_MARK
from tenants.models import UsageRecord

logger = logging.getLogger("gateway.usage")

JOURNAL_MARK = ".journal-"
OPENING_MARK = ".opening-"
"""A segment is created under this name and locked before it is named as a journal, so no
other process ever sees an unlocked journal of a living one."""
ROTATE_LINES = 1024
RETRY_S = 5.0
"""After a failed write, how long records go unjournaled before the journal is tried again."""
STALE_OPENING_S = 60.0
"""An `.opening-` file older than this is a leftover of a process killed while creating it."""


class Segment:
    """One journal file this process appends to and holds locked."""

    __slots__ = ("fd", "lines", "outstanding", "path")

    def __init__(self, path: Path, fd: int) -> None:
        self.path, self.fd = path, fd
        self.lines = 0
        """Records appended since it was created or last emptied."""
        self.outstanding = 0
        """Records appended and not yet in the database."""


class Journal:
    """The process's journal segments beside `spill_path`."""

    def __init__(self, spill_path: str | Path) -> None:
        self.spill_path = Path(spill_path)
        self._current: Segment | None = None
        self._open_segments: list[Segment] = []
        self._closed = False
        self._retry_at: float | None = None
        """Set while the journal cannot be written: when to try again (monotonic)."""

    def append(self, record: UsageRecord) -> Segment | None:
        """Journal one record; the segment to `settle` once the database holds it. None when
        the journal cannot be written (the record is still kept in memory): logged, and tried
        again `RETRY_S` later, with a line once it works again."""
        if self._closed:
            return None
        failing = self._retry_at is not None
        if failing and time.monotonic() < self._retry_at:  # type: ignore[operator]
            return None
        try:
            segment = self._current
            if segment is None or segment.lines >= ROTATE_LINES:
                segment = self._rotate()
            os.write(segment.fd, (record_json(record) + "\n").encode("ascii"))
        except OSError as exc:
            self._retry_at = time.monotonic() + RETRY_S
            if not failing:
                logger.error(
                    "usage journal beside %s not writable (%s): records are kept in memory "
                    "only (lost if the process is killed) until it is; tried again every %g s",
                    self.spill_path,
                    exc,
                    RETRY_S,
                )
            return None
        if failing:
            self._retry_at = None
            logger.warning("usage journal beside %s writable again", self.spill_path)
        segment.lines += 1
        segment.outstanding += 1
        return segment

    def settle(self, segment: Segment | None) -> None:
        """One record of `segment` is in the database (or another durable place)."""
        if segment is None:
            return
        segment.outstanding -= 1
        if segment.outstanding > 0:
            return
        try:
            if segment is self._current:
                os.ftruncate(segment.fd, 0)  # appends go on at the new end (O_APPEND)
                segment.lines = 0
            else:
                self._remove(segment)
        except OSError:
            logger.warning("usage journal %s could not be emptied", segment.path, exc_info=True)

    def close(self) -> None:
        """Stop journaling: a segment is removed when it holds nothing unsettled, else only
        closed (its lock released), to be adopted by the next process."""
        self._current, self._closed = None, True
        for segment in list(self._open_segments):
            if segment.outstanding == 0:
                self._remove(segment)
            else:
                self._open_segments.remove(segment)
                os.close(segment.fd)

    def _rotate(self) -> Segment:
        old = self._current
        self._current = self._open()
        if old is not None and old.outstanding == 0:
            self._remove(old)
        return self._current

    def _open(self) -> Segment:
        directory, name, tag = self.spill_path.parent, self.spill_path.name, uuid.uuid4().hex
        directory.mkdir(parents=True, exist_ok=True)
        opening = directory / f"{name}{OPENING_MARK}{tag}"
        fd = os.open(opening, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            path = directory / f"{name}{JOURNAL_MARK}{os.getpid()}-{tag}"
            os.rename(opening, path)
        except OSError:
            os.close(fd)
            with contextlib.suppress(OSError):
                opening.unlink()
            raise
        segment = Segment(path, fd)
        self._open_segments.append(segment)
        return segment

    def _remove(self, segment: Segment) -> None:
        self._open_segments.remove(segment)
        try:
            segment.path.unlink(missing_ok=True)  # before the lock goes: never adopted
        finally:
            os.close(segment.fd)

    def adopt_orphans(self) -> int:
        """Turn the segments of processes that are gone into claims of the spill file (which
        its replay writes); returns how many. A segment still locked has a living owner."""
        directory, name = self.spill_path.parent, self.spill_path.name
        if not directory.is_dir():
            return 0
        adopted = 0
        for path in directory.glob(f"{name}{JOURNAL_MARK}*"):
            if self._current is not None and path == self._current.path:
                continue
            if self._adopt(path):
                adopted += 1
        cutoff = time.time() - STALE_OPENING_S
        for path in directory.glob(f"{name}{OPENING_MARK}*"):
            with contextlib.suppress(OSError):
                if path.stat().st_mtime < cutoff:
                    self._adopt(path)
        return adopted

    def _adopt(self, path: Path) -> bool:
        try:
            fd = os.open(path, os.O_RDONLY)
        except FileNotFoundError:
            return False  # removed by its owner, or adopted by another process meanwhile
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                return False  # its owner is alive
            if os.fstat(fd).st_size == 0:
                with contextlib.suppress(FileNotFoundError):
                    path.unlink()
                return False
            claim = path.with_name(f"{self.spill_path.name}{CLAIM_MARK}{uuid.uuid4().hex}")
            try:
                os.rename(path, claim)
            except FileNotFoundError:
                return False
            logger.warning(
                "usage journal %s of a process that stopped without a shutdown adopted: its "
                "records are replayed (those already stored are skipped)",
                path.name,
            )
            return True
        finally:
            os.close(fd)
