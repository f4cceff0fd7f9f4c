"""The in-process quota store: embedded mode, and the per-replica fallback in open mode.

Same semantics as the Lua scripts, for one process only. Every operation runs without an
`await` inside, so it is atomic on the event loop.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field

from gateway.limits.policy import QuotaLimits, month_of_day
from gateway.limits.store import (
    CONCURRENT,
    OK,
    SPD,
    SPM,
    TPD,
    TPM,
    Admission,
    Reservation,
    Settlement,
    Snapshot,
    unpack,
)

DAY_S = 86_400


@dataclass
class _Tenant:
    leases: dict[str, float] = field(default_factory=dict)  # run id -> expiry (monotonic)
    reservations: dict[str, float] = field(default_factory=dict)
    minute: dict[int, int] = field(default_factory=dict)  # second -> tokens
    days: dict[int, int] = field(default_factory=dict)  # day -> tokens
    spend_days: dict[int, int] = field(default_factory=dict)  # day -> micro-dollars
    spend_months: dict[int, int] = field(default_factory=dict)  # month -> micro-dollars


SWEEP_EVERY_S = 60.0
"""How often the store drops the records of tenants with nothing left to count."""


def _idle(state: _Tenant, mono: float, now_s: int, today: int) -> bool:
    # This month's spend keeps the record: forgetting it would reset the monthly budget.
    month = month_of_day(today)
    return (
        all(expiry <= mono for expiry in state.leases.values())
        and all(expiry <= mono for expiry in state.reservations.values())
        and all(sec <= now_s - 60 for sec in state.minute)
        and all(day < today for day in state.days)
        and all(day < today for day in state.spend_days)
        and all(m < month for m in state.spend_months)
    )


class MemoryQuotaStore:
    """Quota counters of one process. Bounded: a tenant's record lives while it holds a lease
    or reservation, or has tokens in the rolling minute or in today's count, or spend counted
    today or this calendar month; a sweep at most every `SWEEP_EVERY_S` (on use) drops the
    others."""

    def __init__(self, *, lease_ttl_s: float) -> None:
        self.ttl_s = lease_ttl_s
        self._tenants: dict[str, _Tenant] = {}
        self._swept = time.monotonic()

    def _tenant(self, tenant_id: str) -> _Tenant:
        state = self._tenants.get(tenant_id)
        if state is None:
            if time.monotonic() - self._swept >= SWEEP_EVERY_S:
                self.sweep()
            state = self._tenants[tenant_id] = _Tenant()
        return state

    def sweep(self) -> None:
        """Drop the records of tenants with nothing left to count."""
        mono = time.monotonic()
        now_s = int(time.time())
        today = now_s // DAY_S
        self._swept = mono
        for tenant_id in [t for t, s in self._tenants.items() if _idle(s, mono, now_s, today)]:
            del self._tenants[tenant_id]

    def __len__(self) -> int:
        """Tenants with a record (diagnostics and tests)."""
        return len(self._tenants)

    @staticmethod
    def _minute(state: _Tenant, now_s: int) -> tuple[int, float]:
        for sec in [s for s in state.minute if s <= now_s - 60]:
            del state.minute[sec]
        used = sum(state.minute.values())
        reset = (min(state.minute) + 60 - now_s) if state.minute else 0
        return used, float(reset)

    async def admit(
        self,
        tenant_id: str,
        run_id: str,
        limits: QuotaLimits,
        reservation_id: str = "",
        amount: int = 0,
        spend: int = 0,
    ) -> Admission:
        state = self._tenant(tenant_id)
        now = time.time()
        now_s = int(now)
        day = now_s // DAY_S
        tpm_used, tpm_reset = self._minute(state, now_s)
        tpd_used = state.days.get(day, 0)
        spd_used, spm_used = self._spent(state, day)

        def refused(code: int, in_flight: int, retry: float) -> Admission:
            return Admission(
                code, in_flight, tpm_used, tpd_used, retry, tpm_reset, None, spd_used, spm_used
            )

        # A run whose first call costs nothing (an unpriced model) is never held back by spend.
        if spend and limits.spend_per_month is not None and spm_used >= limits.spend_per_month:
            return refused(SPM, 0, 0.0)
        if spend and limits.spend_per_day is not None and spd_used >= limits.spend_per_day:
            return refused(SPD, 0, float(DAY_S - now_s % DAY_S))
        if limits.tokens_per_day is not None and tpd_used >= limits.tokens_per_day:
            return refused(TPD, 0, float(DAY_S - now_s % DAY_S))
        if limits.tokens_per_minute is not None and tpm_used >= limits.tokens_per_minute:
            return refused(TPM, 0, max(tpm_reset, 1.0))
        in_flight = 0
        if limits.max_concurrent_runs is not None:
            mono = time.monotonic()
            for run in [r for r, exp in state.leases.items() if exp <= mono]:
                del state.leases[run]
            in_flight = len(state.leases)
            if in_flight >= limits.max_concurrent_runs:
                return refused(CONCURRENT, in_flight, 1.0)
            state.leases[run_id] = mono + self.ttl_s
            in_flight += 1
        reservation = None
        if amount or spend:
            reservation = self._reserve(state, reservation_id, amount, limits, spend)
        return Admission(
            OK, in_flight, tpm_used, tpd_used, 0.0, tpm_reset, reservation, spd_used, spm_used
        )

    @staticmethod
    def _spent(state: _Tenant, day: int) -> tuple[int, int]:
        return state.spend_days.get(day, 0), state.spend_months.get(month_of_day(day), 0)

    async def reserve(
        self,
        tenant_id: str,
        run_id: str,
        reservation_id: str,
        amount: int,
        limits: QuotaLimits,
        holds_lease: bool,
        settlements: Sequence[Settlement] = (),
        spend: int = 0,
    ) -> Reservation:
        state = self._tenant(tenant_id)
        self._settle(state, settlements)
        if holds_lease and run_id in state.leases:
            state.leases[run_id] = time.monotonic() + self.ttl_s
        return self._reserve(state, reservation_id, amount, limits, spend)

    def _reserve(
        self,
        state: _Tenant,
        reservation_id: str,
        amount: int,
        limits: QuotaLimits,
        spend: int = 0,
    ) -> Reservation:
        mono = time.monotonic()
        now_s = int(time.time())
        day = now_s // DAY_S
        month = month_of_day(day)
        tpm_used, _ = self._minute(state, now_s)
        tpd_used = state.days.get(day, 0)
        spd_used, spm_used = self._spent(state, day)

        def refused(code: int, retry: float) -> Reservation:
            return Reservation(
                code, reservation_id, amount, tpm_used, tpd_used, retry, 0, day, 0,
                spd_used, spm_used,
            )  # fmt: skip

        # A call that costs nothing (an unpriced model) is never held back by spend.
        if (
            spend
            and limits.spend_per_month is not None
            and spm_used + spend > limits.spend_per_month
        ):
            return refused(SPM, 0.0)
        if spend and limits.spend_per_day is not None and spd_used + spend > limits.spend_per_day:
            return refused(SPD, float(DAY_S - now_s % DAY_S))
        if limits.tokens_per_day is not None and tpd_used + amount > limits.tokens_per_day:
            return refused(TPD, float(DAY_S - now_s % DAY_S))
        if limits.tokens_per_minute is not None and tpm_used + amount > limits.tokens_per_minute:
            excess, wait = tpm_used + amount - limits.tokens_per_minute, 60
            for sec in sorted(state.minute):
                excess -= state.minute[sec]
                if excess <= 0:
                    wait = sec + 60 - now_s
                    break
            return refused(TPM, float(max(wait, 1)))
        state.minute[now_s] = state.minute.get(now_s, 0) + amount
        for old in [d for d in state.days if d < day]:
            del state.days[old]
        state.days[day] = tpd_used + amount
        if spend or limits.spend_metered:
            for old in [d for d in state.spend_days if d < day - 1]:
                del state.spend_days[old]
            for old in [m for m in state.spend_months if m < month - 1]:
                del state.spend_months[old]
            state.spend_days[day] = spd_used + spend
            state.spend_months[month] = spm_used + spend
        for rid in [r for r, exp in state.reservations.items() if exp <= mono]:
            del state.reservations[rid]
        state.reservations[reservation_id] = mono + self.ttl_s
        return Reservation(
            OK, reservation_id, amount, tpm_used + amount, tpd_used + amount, 0.0, now_s, day,
            spend, spd_used + spend, spm_used + spend,
        )  # fmt: skip

    @staticmethod
    def _settle(state: _Tenant, settlements: Sequence[Settlement]) -> None:
        for settlement in settlements:
            reservation, actual, spent = unpack(settlement)
            if state.reservations.pop(reservation.reservation_id, None) is None:
                continue  # settled already, or expired: keeps its reserved amount (as Redis)
            delta = actual - reservation.amount
            if delta:
                if reservation.bucket in state.minute:
                    state.minute[reservation.bucket] += delta
                if reservation.day in state.days:
                    state.days[reservation.day] += delta
            spend_delta = spent - reservation.spend
            if spend_delta:
                month = month_of_day(reservation.day)
                if reservation.day in state.spend_days:
                    state.spend_days[reservation.day] += spend_delta
                if month in state.spend_months:
                    state.spend_months[month] += spend_delta

    async def settle(self, tenant_id: str, reservation: Reservation, actual: int) -> None:
        self._settle(self._tenant(tenant_id), [(reservation, actual)])

    async def release(
        self, tenant_id: str, run_id: str | None, settlements: Sequence[Settlement] = ()
    ) -> None:
        state = self._tenant(tenant_id)
        self._settle(state, settlements)
        if run_id is not None:
            state.leases.pop(run_id, None)

    async def peek(self, tenant_id: str) -> Snapshot:
        state = self._tenant(tenant_id)
        now_s = int(time.time())
        tpm_used, reset = self._minute(state, now_s)
        mono = time.monotonic()
        in_flight = sum(1 for exp in state.leases.values() if exp > mono)
        day = now_s // DAY_S
        spd_used, spm_used = self._spent(state, day)
        return Snapshot(in_flight, tpm_used, state.days.get(day, 0), reset, spd_used, spm_used)

    async def renew(self, tenant_id: str, run_ids: Sequence[str]) -> None:
        state = self._tenant(tenant_id)
        expiry = time.monotonic() + self.ttl_s
        for run_id in run_ids:
            if run_id in state.leases:
                state.leases[run_id] = expiry

    async def seed(
        self, tenant_id: str, day: int, tokens: int, spend_day: int, spend_month: int
    ) -> None:
        state = self._tenant(tenant_id)
        month = month_of_day(day)
        state.days[day] = max(state.days.get(day, 0), tokens)
        state.spend_days[day] = max(state.spend_days.get(day, 0), spend_day)
        state.spend_months[month] = max(state.spend_months.get(month, 0), spend_month)

    def open_counts(self, tenant_id: str) -> tuple[int, int]:
        """(leases, reservations) still open for a tenant (tests and diagnostics)."""
        state = self._tenant(tenant_id)
        return len(state.leases), len(state.reservations)
