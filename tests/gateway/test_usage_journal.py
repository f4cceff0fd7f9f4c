"""The usage journal: a record is on disk from the moment it is queued until the database holds
it; only a process that is gone has its journal adopted (turned into a claim of the spill file,
which the replay writes). The end-to-end kill is in tests/faults/test_usage_spill.py."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from gateway.usage import journal as journal_module
from gateway.usage.codec import record_from_json
from gateway.usage.journal import Journal
from gateway.usage.spill import SpillFile
from tests.gateway.test_usage_recorder import record


def _segments(directory: Path) -> list[Path]:
    return sorted(directory.glob("spill.ndjson.journal-*"))


def test_a_living_journal_is_never_adopted_and_a_closed_one_with_records_is(
    tmp_path: Path,
) -> None:
    spill = tmp_path / "spill.ndjson"
    living, other = Journal(spill), Journal(spill)
    records = [record("ten_x", i) for i in range(3)]
    for r in records:
        living.append(r)
    assert other.adopt_orphans() == 0  # its owner holds the lock
    assert len(_segments(tmp_path)) == 1

    living.close()  # what a killed process leaves: the lock gone, the records there
    assert len(_segments(tmp_path)) == 1
    assert other.adopt_orphans() == 1
    assert _segments(tmp_path) == []
    spill_file = SpillFile(spill)
    assert spill_file.pending()
    (claim,) = spill_file.claim()
    assert [r.run_id for r in SpillFile.read(claim)] == [r.run_id for r in records]


def test_settled_records_leave_the_journal(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(journal_module, "ROTATE_LINES", 2)
    journal = Journal(tmp_path / "spill.ndjson")
    first = [journal.append(record("ten_x", i)) for i in range(2)]
    third = journal.append(record("ten_x", 2))  # a new segment: the first is full
    assert first[0] is first[1] is not third
    assert len(_segments(tmp_path)) == 2

    for segment in first:
        journal.settle(segment)
    (left,) = _segments(tmp_path)  # the older segment, all in the database: removed
    assert [record_from_json(line).input_tokens for line in left.read_text().splitlines()] == [2]

    journal.settle(third)  # the current one is emptied, not removed
    assert left.read_text() == ""
    journal.append(record("ten_x", 3))
    assert len(left.read_text().splitlines()) == 1

    other = Journal(tmp_path / "spill.ndjson")
    journal.close()  # one record unsettled: left for the next process
    assert other.adopt_orphans() == 1


def test_a_journal_with_nothing_unsettled_is_removed_at_close(tmp_path: Path) -> None:
    journal = Journal(tmp_path / "spill.ndjson")
    journal.settle(journal.append(record("ten_x", 1)))
    journal.close()
    assert list(tmp_path.iterdir()) == []


def test_an_unwritable_journal_keeps_the_run_going_and_is_tried_again(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    journal = Journal(blocker / "spill.ndjson")  # its directory cannot be made
    with caplog.at_level(logging.WARNING, logger="gateway.usage"):
        assert journal.append(record("ten_x", 1)) is None
        assert journal.append(record("ten_x", 2)) is None  # not tried again yet
        assert len([r for r in caplog.records if "not writable" in r.getMessage()]) == 1

        blocker.unlink()  # the directory can be made now
        assert journal.append(record("ten_x", 3)) is None  # until RETRY_S has passed
        journal._retry_at = 0.0  # as if RETRY_S had passed
        segment = journal.append(record("ten_x", 4))
        assert segment is not None
        assert any("writable again" in r.getMessage() for r in caplog.records)
    (path,) = _segments(blocker)
    assert [record_from_json(line).input_tokens for line in path.read_text().splitlines()] == [4]
    journal.settle(segment)
    journal.close()
    assert _segments(blocker) == []
