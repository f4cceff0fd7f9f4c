"""What a quota store answers, and the interface both stores (Redis, memory) implement."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from gateway.limits.policy import QuotaLimits

OK = 0
CONCURRENT = 1
TPM = 2
TPD = 3
SPD = 4
SPM = 5


@dataclass(frozen=True, slots=True)
class Reservation:
    """Outcome of reserving tokens before a model call."""

    code: int
    reservation_id: str
    amount: int
    tpm_used: int
    tpd_used: int
    retry_s: float
    bucket: int
    day: int
    spend: int = 0
    """Micro-dollars reserved (the call's estimated cost under the run's price)."""
    spd_used: int = 0
    """Micro-dollars spent (and reserved) today, this reservation included when it fit."""
    spm_used: int = 0
    """The same for the calendar month."""


@dataclass(frozen=True, slots=True)
class Admission:
    """Outcome of admitting a run (lease + token windows)."""

    code: int
    in_flight: int
    tpm_used: int
    tpd_used: int
    retry_s: float
    tpm_reset_s: float
    reservation: Reservation | None = None
    spd_used: int = 0
    spm_used: int = 0
    """The first model call's reservation, when the run was admitted and one was asked for
    (its own `code` says whether it fit)."""


@dataclass(frozen=True, slots=True)
class Snapshot:
    """What is used now, for `GET /v1/limits`."""

    in_flight: int
    tpm_used: int
    tpd_used: int
    tpm_reset_s: float
    spd_used: int = 0
    spm_used: int = 0


Settlement = tuple[Reservation, int] | tuple[Reservation, int, int]
"""A reservation, the tokens its model call really used (0: no answer) and, where spend is
metered, what the call really cost in micro-dollars (absent: 0)."""


def unpack(settlement: Settlement) -> tuple[Reservation, int, int]:
    """(reservation, real tokens, real cost in micro-dollars) of a settlement."""
    if len(settlement) == 3:
        return settlement
    reservation, actual = settlement
    return reservation, actual, 0


class QuotaStore(Protocol):
    """Atomic quota operations of one tenant; Redis (shared) or memory (one process).

    Settlements passed to `reserve` and `release` are applied first, whatever the outcome of
    the rest, in the same atomic step.
    """

    async def admit(
        self,
        tenant_id: str,
        run_id: str,
        limits: QuotaLimits,
        reservation_id: str = "",
        amount: int = 0,
        spend: int = 0,
    ) -> Admission: ...

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
    ) -> Reservation: ...

    async def settle(self, tenant_id: str, reservation: Reservation, actual: int) -> None: ...

    async def release(
        self, tenant_id: str, run_id: str | None, settlements: Sequence[Settlement] = ()
    ) -> None: ...

    async def peek(self, tenant_id: str) -> Snapshot: ...

    async def renew(self, tenant_id: str, run_ids: Sequence[str]) -> None:
        """Push back the expiry of these runs' leases (those still held)."""
        ...

    async def seed(
        self, tenant_id: str, day: int, tokens: int, spend_day: int, spend_month: int
    ) -> None:
        """Raise the day's token and spend counters and the day's month's spend counter to at
        least these amounts (what the usage records say was used before a limit was set)."""
        ...
