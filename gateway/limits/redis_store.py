"""The Redis quota store: one atomic Lua script per operation, clock = Redis `TIME`.

Keys (all under `GATEWAY_REDIS_KEY_PREFIX`, per tenant id):

    q:lease:<tenant>     zset run id -> lease expiry (ms); expired leases are pruned on admit
    q:resv:<tenant>      zset reservation id -> expiry (ms); open reservations only
    q:tpm:<tenant>       hash second -> tokens (the rolling minute = the last 60 seconds)
    q:tpd:<tenant>:<day> tokens of one UTC day (day = epoch seconds // 86400)

Every key carries a TTL, so a crashed replica's leases and reservations vanish by themselves.
"""

from __future__ import annotations

from importlib.resources import files

from redis.asyncio import Redis

from gateway.limits.policy import QuotaLimits
from gateway.limits.store import Admission, Reservation, Snapshot

_SCRIPTS = files("gateway.limits").joinpath("scripts")


def _script(name: str) -> str:
    return _SCRIPTS.joinpath(name).read_text()


class RedisQuotaStore:
    """Quota operations against the shared Redis (every replica sees the same counters)."""

    def __init__(self, redis: Redis, *, prefix: str, lease_ttl_s: float) -> None:
        self.redis = redis
        self.prefix = prefix + "q:"
        self.ttl_ms = int(lease_ttl_s * 1000)
        self._admit = redis.register_script(_script("admit.lua"))
        self._reserve = redis.register_script(_script("reserve.lua"))
        self._settle = redis.register_script(_script("settle.lua"))
        self._peek = redis.register_script(_script("peek.lua"))

    def keys(self, tenant_id: str) -> tuple[str, str, str, str]:
        """(lease, reservations, tokens-per-minute, tokens-per-day prefix) of a tenant."""
        p = self.prefix
        return (
            f"{p}lease:{tenant_id}",
            f"{p}resv:{tenant_id}",
            f"{p}tpm:{tenant_id}",
            f"{p}tpd:{tenant_id}:",
        )

    async def admit(self, tenant_id: str, run_id: str, limits: QuotaLimits) -> Admission:
        lease, _, tpm, tpd = self.keys(tenant_id)
        code, in_flight, tpm_used, tpd_used, retry_ms, reset_ms = await self._admit(
            keys=[lease, tpm, tpd],
            args=[
                run_id,
                limits.max_concurrent_runs or 0,
                limits.tokens_per_minute or 0,
                limits.tokens_per_day or 0,
                self.ttl_ms,
            ],
        )
        return Admission(
            int(code),
            int(in_flight),
            int(tpm_used),
            int(tpd_used),
            retry_ms / 1000,
            reset_ms / 1000,
        )

    async def reserve(
        self,
        tenant_id: str,
        run_id: str,
        reservation_id: str,
        amount: int,
        limits: QuotaLimits,
        holds_lease: bool,
    ) -> Reservation:
        lease, resv, tpm, tpd = self.keys(tenant_id)
        code, tpm_used, tpd_used, retry_ms, bucket, day = await self._reserve(
            keys=[lease, resv, tpm, tpd],
            args=[
                run_id,
                reservation_id,
                amount,
                limits.tokens_per_minute or 0,
                limits.tokens_per_day or 0,
                self.ttl_ms if holds_lease else 0,
                self.ttl_ms,
            ],
        )
        return Reservation(
            int(code),
            reservation_id,
            amount,
            int(tpm_used),
            int(tpd_used),
            retry_ms / 1000,
            int(bucket),
            int(day),
        )

    async def settle(self, tenant_id: str, reservation: Reservation, actual: int) -> None:
        _, resv, tpm, tpd = self.keys(tenant_id)
        await self._settle(
            keys=[resv, tpm, f"{tpd}{reservation.day}"],
            args=[reservation.reservation_id, actual - reservation.amount, reservation.bucket],
        )

    async def release(self, tenant_id: str, run_id: str) -> None:
        await self.redis.zrem(self.keys(tenant_id)[0], run_id)

    async def peek(self, tenant_id: str) -> Snapshot:
        lease, _, tpm, tpd = self.keys(tenant_id)
        in_flight, tpm_used, tpd_used, reset_ms = await self._peek(keys=[lease, tpm, tpd])
        return Snapshot(int(in_flight), int(tpm_used), int(tpd_used), reset_ms / 1000)
