"""What a quota store answers, and the interface both stores (Redis, memory) implement."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from gateway.limits.policy import QuotaLimits

OK = 0
CONCURRENT = 1
TPM = 2
TPD = 3


@dataclass(frozen=True, slots=True)
class Admission:
    """Outcome of admitting a run (lease + token windows)."""

    code: int
    in_flight: int
    tpm_used: int
    tpd_used: int
    retry_s: float
    tpm_reset_s: float


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


@dataclass(frozen=True, slots=True)
class Snapshot:
    """What is used now, for `GET /v1/limits`."""

    in_flight: int
    tpm_used: int
    tpd_used: int
    tpm_reset_s: float


class QuotaStore(Protocol):
    """Atomic quota operations of one tenant; Redis (shared) or memory (one process)."""

    async def admit(self, tenant_id: str, run_id: str, limits: QuotaLimits) -> Admission: ...

    async def reserve(
        self,
        tenant_id: str,
        run_id: str,
        reservation_id: str,
        amount: int,
        limits: QuotaLimits,
        holds_lease: bool,
    ) -> Reservation: ...

    async def settle(self, tenant_id: str, reservation: Reservation, actual: int) -> None: ...

    async def release(self, tenant_id: str, run_id: str) -> None: ...

    async def peek(self, tenant_id: str) -> Snapshot: ...
