"""The quota store's Redis keys against the real Redis: one Redis Cluster slot per tenant (every
key carries the `{<tenant>}` hash tag, and the scripts touch only the keys they are given), the
tokens-per-day counter on the key of the current UTC day, settlements on their reservation's day,
and a replica clock more than a day off refused as a Redis error."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
import redis.asyncio as aioredis
from redis.crc import key_slot
from redis.exceptions import ResponseError

from gateway.limits.policy import QuotaLimits
from gateway.limits.redis_store import RedisQuotaStore, reservation_member
from gateway.limits.store import OK, TPD, Reservation

DAY_S = 86_400
LIMITS = QuotaLimits(tokens_per_minute=10**6, tokens_per_day=10**7, max_concurrent_runs=5)


@pytest.fixture
async def client(redis_url: str) -> AsyncIterator[aioredis.Redis]:
    client = aioredis.Redis.from_url(redis_url)
    yield client
    await client.aclose()


@pytest.fixture
def store(client: aioredis.Redis, redis_prefix: str) -> RedisQuotaStore:
    return RedisQuotaStore(client, prefix=redis_prefix, lease_ttl_s=30)


async def redis_day(client: aioredis.Redis) -> int:
    """The current UTC day by Redis `TIME` (the scripts' clock)."""
    seconds, _ = await client.time()
    return int(seconds) // DAY_S


async def stored_keys(client: aioredis.Redis, prefix: str) -> set[str]:
    return {k.decode() async for k in client.scan_iter(match=f"{prefix}*", count=1000)}


async def tpm_total(client: aioredis.Redis, key: str) -> int:
    return sum(int(v) for v in (await client.hgetall(key)).values())


def member(r: Reservation) -> str:
    """The reservation zset member of `r` (its id and what it took)."""
    return reservation_member(r.reservation_id, r.amount, r.spend, r.bucket, r.day)


def shifted(offset_s: float) -> Callable[[], float]:
    """A replica clock `offset_s` off the real one."""
    return lambda: time.time() + offset_s


def spy_declared(store: RedisQuotaStore) -> set[str]:
    """Every key the store declares (KEYS) to any of its scripts."""
    declared: set[str] = set()
    for name in ("_quota", "_renew"):
        script = getattr(store, name)

        async def spy(*, keys: list[str], args: Any = (), _script: Any = script) -> Any:
            declared.update(keys)
            return await _script(keys=keys, args=args)

        setattr(store, name, spy)
    return declared


async def test_every_key_of_a_tenant_is_in_one_cluster_slot(
    client: aioredis.Redis, store: RedisQuotaStore, redis_prefix: str
) -> None:
    declared = spy_declared(store)
    seen: set[str] = set()
    tenants = ("ten_alpha", "ten_bravo")
    for tid in tenants:
        admission = await store.admit(tid, "run_1", LIMITS, "run_1:1", 120)
        assert admission.code == OK and admission.reservation is not None
        assert admission.reservation.code == OK
        seen |= await stored_keys(client, redis_prefix)  # lease, reservation, tpm, tpd
        second = await store.reserve(
            tid, "run_1", "run_1:2", 80, LIMITS, True, [(admission.reservation, 100)]
        )
        assert second.code == OK
        await store.renew(tid, ["run_1"])
        await store.peek(tid)
        seen |= await stored_keys(client, redis_prefix)
        await store.release(tid, "run_1", [(second, 60)])
        seen |= await stored_keys(client, redis_prefix)

    day = await redis_day(client)
    for tid in tenants:
        tag = f"{redis_prefix}q:{{{tid}}}:"
        mine = {k for k in seen if k.startswith(tag)}
        # the four kinds of keys, named with the tenant's hash tag
        assert mine == {tag + "lease", tag + "resv", tag + "tpm", tag + f"tpd:{day}"}
        assert store.keys(tid) == (tag + "lease", tag + "resv", tag + "tpm", tag + "tpd:")
        # one slot: the CRC16 of the hash tag alone, as Redis Cluster computes it
        slots = {key_slot(k.encode()) for k in mine}
        assert slots == {key_slot(tid.encode())}
    assert len(seen) == 8  # nothing else under the prefix
    # every key the scripts created was declared to them (no key name built inside a script),
    # and every key declared in one call is of one tenant: one slot per script call
    assert seen <= declared
    for tid in tenants:
        tag = f"{redis_prefix}q:{{{tid}}}:"
        assert {key_slot(k.encode()) for k in declared if k.startswith(tag)} == {
            key_slot(tid.encode())
        }
    assert all(k.startswith(tuple(f"{redis_prefix}q:{{{t}}}:" for t in tenants)) for k in declared)


async def test_tokens_per_day_count_on_todays_key_end_to_end(
    client: aioredis.Redis, store: RedisQuotaStore
) -> None:
    tid = "ten_daily"
    _, _, tpm, tpd = store.keys(tid)
    admission = await store.admit(tid, "run_1", LIMITS, "run_1:1", 150)
    reservation = admission.reservation
    assert admission.code == OK and reservation is not None and reservation.code == OK
    day = await redis_day(client)
    assert reservation.day == day
    today = tpd + str(day)
    # reserved: both windows hold the reservation, on today's key alone
    assert int(await client.get(today) or 0) == 150
    assert await tpm_total(client, tpm) == 150
    assert not await client.exists(tpd + str(day - 1), tpd + str(day + 1))
    assert 0 < await client.ttl(today) <= 90_000
    snapshot = await store.peek(tid)
    assert (snapshot.in_flight, snapshot.tpm_used, snapshot.tpd_used) == (1, 150, 150)
    # settled to the real usage when the run ends
    await store.release(tid, "run_1", [(reservation, 42)])
    assert int(await client.get(today) or 0) == 42
    assert await tpm_total(client, tpm) == 42
    snapshot = await store.peek(tid)
    assert (snapshot.in_flight, snapshot.tpm_used, snapshot.tpd_used) == (0, 42, 42)
    # the next admission sees today's 42 against the daily budget
    tight = QuotaLimits(tokens_per_day=50)
    assert (await store.admit(tid, "run_2", tight, "run_2:1", 8)).code == OK
    refused = await store.reserve(tid, "run_2", "run_2:2", 1, tight, False)
    assert refused.code == TPD and refused.tpd_used == 50


async def test_a_settlement_adjusts_the_day_of_its_reservation(
    client: aioredis.Redis, store: RedisQuotaStore
) -> None:
    tid = "ten_midnight"
    _, _, tpm, tpd = store.keys(tid)
    day = await redis_day(client)
    yesterday, today, older = tpd + str(day - 1), tpd + str(day), tpd + str(day - 2)
    await client.set(yesterday, 500, ex=3600)
    await client.set(older, 900, ex=3600)
    admission = await store.admit(tid, "run_1", LIMITS, "run_1:1", 100)
    assert admission.reservation is not None and admission.reservation.code == OK
    assert int(await client.get(today) or 0) == 100

    # reserved 200 yesterday (just before midnight), really used 50: yesterday's key gives back
    # 150, today's is untouched (its bucket second has left the minute window: no tpm change)
    old_bucket = (day - 1) * DAY_S + DAY_S - 1
    before_midnight = Reservation(OK, "run_0:1", 200, 0, 0, 0.0, old_bucket, day - 1)
    two_days_ago = Reservation(OK, "run_x:1", 200, 0, 0, 0.0, old_bucket - DAY_S, day - 2)
    _, resv, _, _ = store.keys(tid)
    far = int(time.time() * 1000) + 60_000
    members = {member(r): far for r in (before_midnight, two_days_ago)}
    await client.zadd(resv, members)  # both still open
    await store.settle(tid, before_midnight, 50)
    assert int(await client.get(yesterday) or 0) == 350
    assert int(await client.get(today) or 0) == 100
    assert await tpm_total(client, tpm) == 100

    # a reservation more than a day old: its day is not among the keys passed; skipped
    await store.settle(tid, two_days_ago, 0)
    assert int(await client.get(older) or 0) == 900
    assert int(await client.get(yesterday) or 0) == 350
    assert int(await client.get(today) or 0) == 100


async def test_a_replica_clock_more_than_a_day_off_is_a_redis_error(
    client: aioredis.Redis, store: RedisQuotaStore
) -> None:
    tid = "ten_skew"
    _, _, _, tpd = store.keys(tid)
    day = await redis_day(client)
    # hours off: still counted on Redis's day (the script's clock), not the replica's
    store.clock = shifted(20 * 3600)
    admission = await store.admit(tid, "run_1", LIMITS, "run_1:1", 30)
    assert admission.reservation is not None and admission.reservation.day == day
    assert int(await client.get(tpd + str(day)) or 0) == 30
    assert (await store.peek(tid)).tpd_used == 30
    # two days off: refused with an error reply (the quota service takes it as a Redis failure)
    for off in (2 * DAY_S, -2 * DAY_S):
        store.clock = shifted(off)
        with pytest.raises(ResponseError, match="clock skew"):
            await store.admit(tid, "run_2", LIMITS, "run_2:1", 30)
        with pytest.raises(ResponseError, match="clock skew"):
            await store.reserve(tid, "run_1", "run_1:2", 30, LIMITS, True)
        with pytest.raises(ResponseError, match="clock skew"):
            await store.peek(tid)
    store.clock = time.time
    assert int(await client.get(tpd + str(day)) or 0) == 30
    assert (await store.peek(tid)).in_flight == 1  # run_2 was not admitted


@pytest.mark.parametrize("kind", ["redis", "memory"])
async def test_a_settlement_applies_once_even_when_the_step_is_retried(
    kind: str, store: RedisQuotaStore
) -> None:
    """The Redis client retries a step once when its connection died; if Redis had run the
    step, the settlement arrives twice: it must count once (no undercount, no overshoot)."""
    from gateway.limits.memory import MemoryQuotaStore

    quota: RedisQuotaStore | MemoryQuotaStore = (
        store if kind == "redis" else MemoryQuotaStore(lease_ttl_s=30)
    )
    tid = f"ten_retry_{kind}"
    admission = await quota.admit(tid, "run_1", LIMITS, "run_1:1", 150)
    first = admission.reservation
    assert first is not None and first.code == OK
    second = await quota.reserve(tid, "run_1", "run_1:2", 100, LIMITS, True, [(first, 40)])
    assert second.code == OK
    assert (await quota.peek(tid)).tpd_used == 40 + 100
    # the same step again (a retry after a lost reply): first's settlement must not repeat
    again = await quota.reserve(tid, "run_1", "run_1:2", 100, LIMITS, True, [(first, 40)])
    assert again.code == OK
    await quota.release(tid, "run_1", [(second, 30)])
    await quota.release(tid, "run_1", [(second, 30)])
    snapshot = await quota.peek(tid)
    # 40 + 30 really used, plus the retried reservation of 100 (pessimistic, never lower)
    assert snapshot.tpd_used == 40 + 30 + 100
    assert snapshot.in_flight == 0


async def test_the_rolling_minute_sums_the_last_60_seconds_and_says_when_a_call_fits(
    client: aioredis.Redis, store: RedisQuotaStore
) -> None:
    """Buckets older than a minute are deleted and not counted; a refused reservation waits
    until enough of the oldest buckets have rolled off for it to fit."""
    limits = QuotaLimits(tokens_per_minute=1000)
    _, _, tpm, _ = store.keys("ten_rolling")
    now, _ = await client.time()
    # A call crossing a second boundary would shift every bucket's age: retry on a new second.
    for _ in range(3):
        now, _ = await client.time()
        await client.delete(tpm)
        await client.hset(
            tpm, mapping={now - 70: 5000, now - 50: 600, now - 30: 100, now - 10: 200}
        )
        reservation = await store.reserve("ten_rolling", "run", "r1", 500, limits, False)
        if (await client.time())[0] == now:
            break
    # 900 used in the minute; 500 more needs 400 of it gone: the bucket of 50 s ago, in 10 s.
    assert (reservation.code, reservation.tpm_used, reservation.retry_s) == (2, 900, 10.0)
    assert str(now - 70).encode() not in await client.hgetall(tpm)
    fits = await store.reserve("ten_rolling", "run", "r2", 100, limits, False)
    assert (fits.code, fits.tpm_used) == (OK, 1000)


async def test_every_counter_the_scripts_create_carries_a_ttl(
    client: aioredis.Redis, store: RedisQuotaStore, redis_prefix: str
) -> None:
    """Counters get their TTL when created, not on every write: a second reservation in the
    same second, the day and the month still leaves no key without one."""
    tid = "ten_ttl"
    limits = QuotaLimits(
        tokens_per_minute=10**6,
        tokens_per_day=10**7,
        max_concurrent_runs=5,
        spend_per_day=10**9,
        spend_per_month=10**10,
    )
    admission = await store.admit(tid, "run_1", limits, "run_1:1", 150, spend=30)
    assert admission.code == OK and admission.reservation is not None
    second = await store.reserve(
        tid, "run_1", "run_1:2", 80, limits, True, [(admission.reservation, 120)], spend=20
    )
    assert second.code == OK
    await store.release(tid, "run_1", [(second, 70)])
    keys = await stored_keys(client, f"{redis_prefix}q:{{{tid}}}:")
    kinds = {key.split("}:", 1)[1].split(":", 1)[0] for key in keys}
    assert kinds == {"tpm", "tpd", "spd", "spm"}  # the lease and reservations are gone
    for key in keys:
        assert await client.ttl(key) > 0, key


async def test_a_crashed_replicas_reservations_give_back_what_they_took(
    client: aioredis.Redis, redis_prefix: str
) -> None:
    # SPEC §6: reservations always settle, a crash by the lease TTL. A replica that dies holds
    # reservations nobody will settle: once expired they settle to zero; a live replica's
    # renewal (with its leases) keeps a long model call's reservation counted.
    store = RedisQuotaStore(client, prefix=redis_prefix, lease_ttl_s=1)
    tid = "ten_crash"
    limits = QuotaLimits(tokens_per_day=10**6, spend_per_day=10**6, max_concurrent_runs=5)
    assert (await store.admit(tid, "run_dead", limits, "run_dead:1", 100, 40)).code == OK
    assert (await store.reserve(tid, "run_dead", "run_dead:2", 60, limits, True, (), 20)).code == OK
    assert (await store.admit(tid, "run_live", limits, "run_live:1", 7, 3)).code == OK
    snapshot = await store.peek(tid)
    assert (snapshot.in_flight, snapshot.tpd_used, snapshot.spd_used) == (2, 167, 63)
    deadline = time.monotonic() + 1.6
    while time.monotonic() < deadline:  # only the live replica renews its run
        await store.renew(tid, ["run_live"])
        await asyncio.sleep(0.2)
    snapshot = await store.peek(tid)
    assert (snapshot.in_flight, snapshot.tpd_used, snapshot.spd_used) == (1, 7, 3)


async def test_a_crashed_replicas_reservation_is_given_back_with_no_other_run_about(
    client: aioredis.Redis, redis_prefix: str
) -> None:
    """The only run of a tenant dies with its replica: no live run renews anything, and
    nobody calls until well past the reservation's expiry. The reservation set must still be
    there to give back what it took (it used to expire with its last member)."""
    store = RedisQuotaStore(client, prefix=redis_prefix, lease_ttl_s=1)
    tid = "ten_alone"
    limits = QuotaLimits(tokens_per_day=10**6, spend_per_day=10**6, max_concurrent_runs=1)
    assert (await store.admit(tid, "run_dead", limits, "run_dead:1", 4126, 700)).code == OK
    snapshot = await store.peek(tid)
    assert (snapshot.in_flight, snapshot.tpd_used, snapshot.spd_used) == (1, 4126, 700)
    await asyncio.sleep(2.5)
    snapshot = await store.peek(tid)
    assert (snapshot.in_flight, snapshot.tpd_used, snapshot.spd_used) == (0, 0, 0)
    keys = await stored_keys(client, f"{redis_prefix}q:{{{tid}}}:")
    for key in keys:
        assert await client.ttl(key) > 0, key
