"""The local spill file: usage records that could not reach the database, kept on disk.

Records land here when the database is still unreachable at shutdown (after the last flush
attempt), and when the in-memory queue is full. Every start (and every later moment the
database answers) replays the file: it is claimed by an atomic rename, so one process of
several replays each record, then written through the usual batch writer, whose insert skips
run ids already stored. A record that was in fact written before the spill is therefore never
counted twice.

Several processes may share one path (`gateway serve --workers N`): appends hold an exclusive
`flock` and check that the path still names the file they locked (a claim may have renamed it
meanwhile); a claim takes the same lock after its rename, so an append in progress finishes
first. A claimed file that its process did not finish (a crash mid-replay) is claimed again by
the next replay.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import uuid
from collections.abc import Iterable
from pathlib import Path

from gateway.usage.codec import record_from_json, record_json
from tenants.models import UsageRecord

logger = logging.getLogger("gateway.usage")

CLAIM_MARK = ".replaying-"


class SpillFile:
    """Appends records to `path` and hands them back for replay."""

    def __init__(self, path: str) -> None:
        self.path = Path(path)

    def append(self, records: Iterable[UsageRecord], *, sync: bool = True) -> int:
        """Append records as JSON lines (fsync'd when `sync`); returns how many. Raises
        OSError when the file cannot be written."""
        lines = [record_json(record) + "\n" for record in records]
        if not lines:
            return 0
        self.path.parent.mkdir(parents=True, exist_ok=True)
        while True:
            fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX)
                if not self._still_named(fd):
                    continue  # claimed (renamed) between our open and our lock: open again
                os.write(fd, "".join(lines).encode("ascii"))
                if sync:
                    os.fsync(fd)
                return len(lines)
            finally:
                os.close(fd)

    def _still_named(self, fd: int) -> bool:
        try:
            return os.stat(self.path).st_ino == os.fstat(fd).st_ino
        except FileNotFoundError:
            return False

    def pending(self) -> bool:
        """True when there is something to replay (a spill file or an unfinished claim)."""
        if self.path.exists() and self.path.stat().st_size > 0:
            return True
        return any(self._claims())

    def _claims(self) -> Iterable[Path]:
        return self.path.parent.glob(f"{self.path.name}{CLAIM_MARK}*")

    def claim(self) -> list[Path]:
        """Take the spill file and any unfinished claim for this process (atomic renames)."""
        claimed = []
        for source in [self.path, *self._claims()]:
            target = source.with_name(f"{self.path.name}{CLAIM_MARK}{uuid.uuid4().hex}")
            try:
                os.rename(source, target)
            except FileNotFoundError:
                continue  # nothing there, or another process claimed it first
            claimed.append(target)
        return claimed

    @staticmethod
    def read(claimed: Path) -> list[UsageRecord]:
        """The records of a claimed file (waits for an append in progress to finish). A line
        that cannot be parsed is logged whole and skipped."""
        with claimed.open("r", encoding="ascii", errors="backslashreplace") as file:
            fcntl.flock(file, fcntl.LOCK_EX)
            lines = file.read().splitlines()
        records = []
        for line in lines:
            if not line.strip():
                continue
            try:
                records.append(record_from_json(line))
            except (ValueError, KeyError, TypeError):
                logger.error("unreadable usage spill line kept in the log: %s", line)
        return records

    @staticmethod
    def done(claimed: Path) -> None:
        """Remove a claimed file whose records are all settled."""
        # Gone already: re-claimed by another process meanwhile (its records are idempotent).
        with contextlib.suppress(FileNotFoundError):
            claimed.unlink()
