"""The Redis quota store: one atomic Lua script (`quota.lua`) per step, clock = Redis `TIME`.

Keys (all under `GATEWAY_REDIS_KEY_PREFIX`, per tenant id):

    q:{<tenant>}:lease      zset run id -> lease expiry (ms); expired leases are pruned on admit
    q:{<tenant>}:resv       zset reservation id -> expiry (ms); open reservations only
    q:{<tenant>}:tpm        hash second -> tokens (the rolling minute = the last 60 seconds)
    q:{<tenant>}:tpd:<day>  tokens of one UTC day (day = epoch seconds // 86400)
    q:{<tenant>}:spd:<day>  micro-dollars spent (and reserved) on one UTC day
    q:{<tenant>}:spm:<month>  micro-dollars of one calendar month (year * 12 + month - 1)

Redis Cluster safe: the `{<tenant>}` hash tag puts all of a tenant's keys on one slot, and the
scripts touch only the keys they are given. A script cannot name the day key itself, so each
call passes the day keys of yesterday, today and tomorrow by this replica's clock (and
yesterday's day number), and the same for the spend keys (each day's spend key and its
month's spend key: the caller's calendar says which month a day is in); the script picks the
ones of Redis `TIME`'s day. A replica whose UTC
day is more than one off Redis's gets an error ('clock skew'), handled as any Redis failure.
A settlement adjusts the day key of its reservation's day when it is among the three, else
(a reservation over a day old) only the minute window: that day's counter is no longer read.
(A prefix with its own `{...}` puts every tenant on that one slot; still safe, less spread.)

Every key carries a TTL, so a crashed replica's leases and reservations vanish by themselves;
a live replica renews the leases of its runs in flight (`renew.lua`), so a model call longer
than the TTL does not lose its run's lease.
A run costs 1 + k round trips for k model calls: admit + the first reservation; then each
further reservation carries the previous call's settlement; the end settles the last call and
releases the lease.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from importlib.resources import files
from typing import Any

from redis.asyncio import Redis

from gateway.core.redis_script import LeanScript
from gateway.limits.policy import QuotaLimits, month_of_day
from gateway.limits.store import Admission, Reservation, Settlement, Snapshot, unpack

_SCRIPTS = files("gateway.limits").joinpath("scripts")
_KEYS_CACHE = 4096
_DAY_S = 86_400


def _script(name: str) -> str:
    return _SCRIPTS.joinpath(name).read_text()


class RedisQuotaStore:
    """Quota operations against the shared Redis (every replica sees the same counters)."""

    def __init__(self, redis: Redis, *, prefix: str, lease_ttl_s: float) -> None:
        self.redis = redis
        self.prefix = prefix + "q:"
        self.ttl_ms = int(lease_ttl_s * 1000)
        self._quota = LeanScript(redis, _script("quota.lua"))
        self._renew = LeanScript(redis, _script("renew.lua"))
        self._seed = LeanScript(redis, _script("seed.lua"))
        self._keys: dict[str, tuple[str, str, str, str, str, str]] = {}
        self._day_keys: dict[str, tuple[int, tuple[str, ...]]] = {}
        """Per tenant: the base day and the script's KEYS for it (bounded like `_keys`)."""
        self.clock: Callable[[], float] = time.time
        """This replica's clock (epoch seconds): which three day keys a call passes."""

    def keys(self, tenant_id: str) -> tuple[str, str, str, str]:
        """(lease, reservations, tokens-per-minute, tokens-per-day prefix) of a tenant; the
        tokens-per-day key of a day is the prefix + `str(day)`."""
        lease, resv, tpm, tpd, _, _ = self._tenant_keys(tenant_id)
        return lease, resv, tpm, tpd

    def spend_keys(self, tenant_id: str) -> tuple[str, str]:
        """(spend-per-day prefix, spend-per-month prefix): + `str(day)`, + `str(month)`."""
        _, _, _, _, spd, spm = self._tenant_keys(tenant_id)
        return spd, spm

    def _tenant_keys(self, tenant_id: str) -> tuple[str, str, str, str, str, str]:
        keys = self._keys.get(tenant_id)
        if keys is None:
            if len(self._keys) >= _KEYS_CACHE:
                self._keys.clear()
            p = f"{self.prefix}{{{tenant_id}}}:"
            keys = (p + "lease", p + "resv", p + "tpm", p + "tpd:", p + "spd:", p + "spm:")
            self._keys[tenant_id] = keys
        return keys

    def _script_keys(self, tenant_id: str) -> tuple[list[str], int]:
        """`quota.lua`'s KEYS (lease, reservations, tpm, the token-day, spend-day and
        spend-month keys of yesterday, today and tomorrow) and the base day (yesterday), by
        this replica's clock."""
        base = int(self.clock()) // _DAY_S - 1
        cached = self._day_keys.get(tenant_id)
        if cached is None or cached[0] != base:
            if len(self._day_keys) >= _KEYS_CACHE:
                self._day_keys.clear()
            lease, resv, tpm, tpd, spd, spm = self._tenant_keys(tenant_id)
            days = (base, base + 1, base + 2)
            keys = (
                lease,
                resv,
                tpm,
                *(tpd + str(day) for day in days),
                *(spd + str(day) for day in days),
                *(spm + str(month_of_day(day)) for day in days),
            )
            cached = self._day_keys[tenant_id] = (base, keys)
        return list(cached[1]), base

    def settlement_args(self, settlements: Sequence[Settlement]) -> list[Any]:
        """The script arguments of `settlements` (a method, so tests can see every one)."""
        args: list[Any] = []
        for settlement in settlements:
            reservation, actual, spent = unpack(settlement)
            args += (
                reservation_member(
                    reservation.reservation_id,
                    reservation.amount,
                    reservation.spend,
                    reservation.bucket,
                    reservation.day,
                ),
                actual - reservation.amount,
                reservation.bucket,
                reservation.day,
                spent - reservation.spend,
            )
        return args

    async def admit(
        self,
        tenant_id: str,
        run_id: str,
        limits: QuotaLimits,
        reservation_id: str = "",
        amount: int = 0,
        spend: int = 0,
    ) -> Admission:
        ttl = self.ttl_ms
        keys, base = self._script_keys(tenant_id)
        reply = await self._quota(
            keys=keys,
            args=[
                "a",
                run_id,
                ttl,
                limits.max_concurrent_runs or 0,
                limits.tokens_per_minute or 0,
                limits.tokens_per_day or 0,
                ttl,
                reservation_member(reservation_id, amount, spend),
                amount,
                base,
                limits.spend_per_day or 0,
                limits.spend_per_month or 0,
                spend,
            ],
        )
        code, in_flight, tpm_used, tpd_used, retry_ms, reset_ms, spd_used, spm_used = reply[:8]
        reservation = None
        if (amount or spend) and code == 0:
            reservation = _reservation(reply[8:], reservation_id, amount, spend)
        return Admission(
            code,
            in_flight,
            tpm_used,
            tpd_used,
            retry_ms / 1000,
            reset_ms / 1000,
            reservation,
            spd_used,
            spm_used,
        )

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
        keys, base = self._script_keys(tenant_id)
        args: list[Any] = [
            "r",
            run_id,
            self.ttl_ms if holds_lease else 0,
            0,
            limits.tokens_per_minute or 0,
            limits.tokens_per_day or 0,
            self.ttl_ms,
            reservation_member(reservation_id, amount, spend),
            amount,
            base,
            limits.spend_per_day or 0,
            limits.spend_per_month or 0,
            spend,
        ]
        if settlements:
            args += self.settlement_args(settlements)
        reply = await self._quota(keys=keys, args=args)
        return _reservation(reply, reservation_id, amount, spend)

    async def settle(self, tenant_id: str, reservation: Reservation, actual: int) -> None:
        await self.release(tenant_id, None, [(reservation, actual)])

    async def release(
        self, tenant_id: str, run_id: str | None, settlements: Sequence[Settlement] = ()
    ) -> None:
        keys, base = self._script_keys(tenant_id)
        args: list[Any] = ["e", run_id or "", 0, 0, 0, 0, 0, "", 0, base, 0, 0, 0]
        if settlements:
            args += self.settlement_args(settlements)
        await self._quota(keys=keys, args=args)

    async def peek(self, tenant_id: str) -> Snapshot:
        keys, base = self._script_keys(tenant_id)
        # quota.lua's 'p': it gives back expired reservations (a crashed replica's) first.
        reply = await self._quota(keys=keys, args=["p", "", 0, 0, 0, 0, 0, "", 0, base, 0, 0, 0])
        in_flight, tpm_used, tpd_used, reset_ms, spd_used, spm_used = reply
        return Snapshot(
            int(in_flight),
            int(tpm_used),
            int(tpd_used),
            reset_ms / 1000,
            int(spd_used),
            int(spm_used),
        )

    async def renew(self, tenant_id: str, run_ids: Sequence[str]) -> None:
        lease, resv = self._tenant_keys(tenant_id)[:2]
        await self._renew(keys=[lease, resv], args=[self.ttl_ms, *run_ids])

    async def seed(
        self, tenant_id: str, day: int, tokens: int, spend_day: int, spend_month: int
    ) -> None:
        _, _, _, tpd, spd, spm = self._tenant_keys(tenant_id)
        keys = [tpd + str(day), spd + str(day), spm + str(month_of_day(day))]
        await self._seed(keys=keys, args=[tokens, spend_day, spend_month])


def reservation_member(
    reservation_id: str, amount: int, spend: int, bucket: int | None = None, day: int | None = None
) -> str:
    """A reservation's member of the reservation zset: its id and what it took (tokens,
    micro-dollars, then the second and day it was counted on, which quota.lua appends when it
    reserves), so one that expires unsettled can give it back."""
    member = f"{reservation_id}|{amount}|{spend}"
    return member if bucket is None else f"{member}|{bucket}|{day}"


def _reservation(reply: list[Any], reservation_id: str, amount: int, spend: int = 0) -> Reservation:
    code, tpm_used, tpd_used, retry_ms, bucket, day, spd_used, spm_used = reply
    return Reservation(
        code,
        reservation_id,
        amount,
        tpm_used,
        tpd_used,
        retry_ms / 1000,
        bucket,
        day,
        spend if code == 0 else 0,
        spd_used,
        spm_used,
    )
