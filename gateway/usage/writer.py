"""Writing a batch of usage records so that one bad record never holds back the others.

A batch insert that fails because of its records (the database refused a value: SQLSTATE
class 22 "data exception" or 23 "integrity constraint"; or the driver could not encode one) is
split in halves, each written on its own, down to the record at fault. That record is
quarantined: a row in `usage_dead_letters`; if the database refuses that row too, a line in the
dead-letter file; failing that, an error log line carrying the record. Every quarantined record
is counted in `gateway_usage_dead_letters_total{sink}`; none is dropped silently.

Any other failure (connection refused, timeout, a missing table) means the database is
unavailable, not that a record is bad: `WriteInterrupted` tells the recorder how many records
at the head of the batch are settled (written or quarantined); it keeps the rest and retries.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
from collections.abc import Sequence

from sqlalchemy.exc import DBAPIError, IntegrityError, StatementError

from gateway.core.db import Database
from gateway.usage.codec import record_json
from observability.metrics import USAGE_DEAD_LETTERS
from tenants.models import UsageDeadLetter, UsageRecord
from tenants.usage.dead_letters import DeadLetterRepository
from tenants.usage.repository import UsageRepository

logger = logging.getLogger("gateway.usage")

RECORD_FAULT_SQLSTATE_CLASSES = frozenset({"22", "23"})
"""SQLSTATE classes that blame the data (a value, a constraint), not the database."""


class WriteInterrupted(Exception):
    """The database became unavailable; the first `settled` records are written or
    quarantined, the others are not."""

    def __init__(self, settled: int) -> None:
        super().__init__(f"usage write interrupted after {settled} records")
        self.settled = settled


def is_record_fault(exc: BaseException) -> bool:
    """True when the failure is caused by the records written, not by the database."""
    if isinstance(exc, IntegrityError):
        return True
    if isinstance(exc, DBAPIError):
        state = getattr(exc.orig, "sqlstate", None) or getattr(exc.orig, "pgcode", None)
        return isinstance(state, str) and state[:2] in RECORD_FAULT_SQLSTATE_CLASSES
    if isinstance(exc, StatementError):  # a value the driver could not bind
        return isinstance(exc.orig, ValueError | TypeError)
    return isinstance(exc, ValueError | TypeError)  # e.g. UnicodeEncodeError from sqlite3


def _reason(exc: BaseException) -> str:
    """The error's type and first line, without the SQL or its parameters, ASCII-safe."""
    cause = exc.orig if isinstance(exc, StatementError) and exc.orig is not None else exc
    first_line = (str(cause).splitlines() or [""])[0]
    text = f"{type(cause).__name__}: {first_line}"
    return text.encode("ascii", "backslashreplace").decode()[:1000]


def _storable(value: object, max_length: int = 64) -> str | None:
    if isinstance(value, str) and value.isprintable() and value.isascii():
        return value[:max_length]
    return None


class BatchWriter:
    """Inserts batches, bisecting around records the database refuses."""

    def __init__(self, db: Database, *, dead_letter_path: str | None) -> None:
        self._db = db
        self._dead_letter_path = dead_letter_path
        self.quarantined = 0

    async def write(self, batch: Sequence[UsageRecord]) -> None:
        """Write (or quarantine) every record of `batch`; `WriteInterrupted` on an outage."""
        settled = 0

        async def write_part(part: Sequence[UsageRecord]) -> None:
            nonlocal settled
            try:
                async with self._db.unit() as session:
                    await UsageRepository(session).add_many(list(part))
            except Exception as exc:
                if not is_record_fault(exc):
                    self._db.failed(exc)
                    raise WriteInterrupted(settled) from exc
                if len(part) == 1:
                    await self._quarantine(part[0], exc)
                else:
                    middle = len(part) // 2
                    await write_part(part[:middle])
                    await write_part(part[middle:])
                    return
            settled += len(part)

        await write_part(batch)

    async def _quarantine(self, record: UsageRecord, exc: BaseException) -> None:
        reason = _reason(exc)
        line = record_json(record)
        logger.error(
            "usage record %s refused by the database (%s): quarantined",
            _storable(record.run_id) or "?",
            reason,
        )
        self.quarantined += 1
        letter = UsageDeadLetter(
            run_id=_storable(record.run_id),
            tenant_id=_storable(record.tenant_id),
            reason=reason,
            record=line,
        )
        try:
            async with self._db.unit() as session:
                await DeadLetterRepository(session).add(letter)
        except Exception:
            logger.warning("dead-letter row refused; writing the dead-letter file", exc_info=True)
        else:
            USAGE_DEAD_LETTERS.labels("table").inc()
            return
        if self._dead_letter_path and _append_line(self._dead_letter_path, line, reason):
            USAGE_DEAD_LETTERS.labels("file").inc()
            return
        logger.error("usage record not stored anywhere (%s): %s", reason, line)
        USAGE_DEAD_LETTERS.labels("log").inc()


def _append_line(path: str, line: str, reason: str) -> bool:
    """Append one dead letter (`{"reason": ..., "record": ...}`) to the file; False on failure."""
    try:
        with open(path, "a", encoding="ascii") as file:
            fcntl.flock(file, fcntl.LOCK_EX)
            file.write(json.dumps({"reason": reason, "record": line}) + "\n")
            file.flush()
            os.fsync(file.fileno())
    except OSError:
        logger.exception("dead-letter file %s not writable", path)
        return False
    return True
