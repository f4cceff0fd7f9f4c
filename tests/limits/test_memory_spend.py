"""The in-process quota store keeps a tenant's monthly spend for the whole calendar month: its
sweep of idle tenants (nothing left to count) must not reset a monthly budget overnight."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from types import SimpleNamespace

import pytest

from gateway.limits import memory
from gateway.limits.memory import MemoryQuotaStore
from gateway.limits.policy import QuotaLimits
from gateway.limits.store import OK, SPM

MONTHLY = QuotaLimits.of({"spend_per_month_usd": "1"})  # 1,000,000 micro-dollars


class Clock:
    """The store's wall clock (UTC days and months), set by the test; monotonic stays real."""

    def __init__(self, moment: datetime) -> None:
        self.now = moment.timestamp()

    def namespace(self) -> SimpleNamespace:
        return SimpleNamespace(time=lambda: self.now, monotonic=time.monotonic)


async def test_monthly_spend_outlives_the_day_and_the_sweep(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    clock = Clock(datetime(2026, 6, 10, 12, tzinfo=UTC))
    monkeypatch.setattr(memory, "time", clock.namespace())
    store = MemoryQuotaStore(lease_ttl_s=60)
    admitted = await store.admit("ten_m", "run_1", MONTHLY, "run_1:1", 100, 900_000)
    assert admitted.code == OK and admitted.reservation is not None
    await store.release("ten_m", None, [(admitted.reservation, 100, 800_000)])

    clock.now = datetime(2026, 6, 11, 12, tzinfo=UTC).timestamp()  # the next day, same month
    store.sweep()
    assert len(store) == 1, "this month's spend is still counted"
    assert (await store.peek("ten_m")).spm_used == 800_000
    refused = await store.admit("ten_m", "run_2", MONTHLY, "run_2:1", 100, 300_000)
    assert refused.reservation is not None and refused.reservation.code == SPM

    clock.now = datetime(2026, 7, 1, 0, 0, 1, tzinfo=UTC).timestamp()  # a new month
    store.sweep()
    assert len(store) == 0
    again = await store.admit("ten_m", "run_3", MONTHLY, "run_3:1", 100, 300_000)
    assert again.reservation is not None and again.reservation.code == OK
