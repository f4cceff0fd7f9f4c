"""Token quotas and concurrency caps of runs: `QuotaService` (one per app) and `RunTicket`.

A run is admitted with one atomic call (token windows not exhausted, a concurrency lease
taken) that also reserves the first model call's `estimated input + max output` tokens. Before
every further model call one atomic call renews the lease, settles the previous call's
reservation to its real usage and reserves for the next call. When the run ends, however it
ends, one atomic call settles the last answered call, settles unanswered calls to zero (no
usage came back) and releases the lease. So a run of k model calls costs k + 1 round trips.
Leases and reservations carry a TTL, so a crashed replica's are gone after at most
`GATEWAY_LIMITS_LEASE_TTL_S`. A live replica whose Redis step timed out tries it again
(`gateway.limits.retries`): its settlement, or the undoing of an admission or reservation
whose reply was lost while the run went on in memory, so Redis's counters end at the real
usage rather than at estimates nobody settles.
"""

from __future__ import annotations

import asyncio
import logging
import time
import weakref
from collections.abc import Awaitable, Callable, Iterable
from functools import partial
from typing import TypeVar

from redis.asyncio import Redis

from gateway.auth.principal import Principal
from gateway.core.background import BackgroundTasks
from gateway.core.config import Settings
from gateway.core.errors import RateLimitedError, ServiceUnavailableError
from gateway.core.timebox import time_box
from gateway.limits.breaker import REDIS_ERRORS, RedisBreaker
from gateway.limits.headers import spend_headers, token_headers
from gateway.limits.memory import MemoryQuotaStore
from gateway.limits.policy import (
    CONCURRENT_RUNS,
    SPEND_PER_DAY,
    SPEND_PER_MONTH,
    TOKENS_PER_DAY,
    TOKENS_PER_MINUTE,
    QuotaLimits,
    seconds_to_month_end,
)
from gateway.limits.prices import estimate_micro
from gateway.limits.redis_store import RedisQuotaStore
from gateway.limits.retries import RedisRetries
from gateway.limits.store import (
    CONCURRENT,
    OK,
    SPD,
    SPM,
    TPD,
    TPM,
    Admission,
    QuotaStore,
    Reservation,
    Settlement,
    Snapshot,
)
from observability.metrics import RATE_LIMIT_REJECTIONS, note_tenant_limits, tenant_label
from tenants.price.money import micro_to_usd
from tenants.price.pricing import Price

logger = logging.getLogger("gateway.limits")
T = TypeVar("T")

_CODES = {
    CONCURRENT: CONCURRENT_RUNS,
    2: TOKENS_PER_MINUTE,
    TPD: TOKENS_PER_DAY,
    SPD: SPEND_PER_DAY,
    SPM: SPEND_PER_MONTH,
}
_MESSAGES = {
    TOKENS_PER_MINUTE: "Token quota per minute exhausted.",
    TOKENS_PER_DAY: "Token quota per day exhausted.",
    SPEND_PER_DAY: "Spend limit per day reached.",
    SPEND_PER_MONTH: "Spend limit per month reached.",
}


_QUOTA_CODES = frozenset({TOKENS_PER_DAY, SPEND_PER_DAY, SPEND_PER_MONTH})


def _retry_s(code: int, retry_s: float) -> float:
    # The script cannot know the calendar: a month's end is the caller's to say.
    return seconds_to_month_end() if code == SPM else retry_s


def rejection(principal: Principal, code: str, message: str, retry_s: float) -> RateLimitedError:
    """A 429 for `code`, counted in `gateway_rate_limit_rejections_total`."""
    RATE_LIMIT_REJECTIONS.labels(tenant_label(principal.tenant_slug), code).inc()
    if code in _QUOTA_CODES and principal.limits is not None:  # the gauges quota alerts divide by
        note_tenant_limits(principal.tenant_slug, principal.limits)
    return RateLimitedError(message, code=code, retry_after_s=retry_s)


class QuotaService:
    """Routes quota operations to Redis (when configured and healthy) or to memory."""

    def __init__(self, settings: Settings, redis: Redis | None, breaker: RedisBreaker) -> None:
        ttl = settings.limits_lease_ttl_s
        self.breaker = breaker
        self.timeout_s = settings.redis_timeout_ms / 1000
        self.memory = MemoryQuotaStore(lease_ttl_s=ttl)
        self.redis: RedisQuotaStore | None = None
        self.tasks = BackgroundTasks("lease-keeper")
        self.retries: RedisRetries | None = None
        if redis is not None:
            self.redis = RedisQuotaStore(redis, prefix=settings.redis_key_prefix, lease_ttl_s=ttl)
            # Reservations live as long as a lease: past that, a settlement finds nothing.
            self.retries = RedisRetries(
                self.redis, breaker, timeout_s=self.timeout_s, window_s=ttl, tasks=self.tasks
            )
        self.default_max_output = settings.limits_default_max_output_tokens
        self._held: weakref.WeakValueDictionary[str, RunTicket] = weakref.WeakValueDictionary()
        """Runs of this replica holding a lease (run id -> ticket), renewed by the periodic pass.
        Weak: a ticket dropped without `close()` (a bug) is no longer renewed, so its lease
        still expires by TTL instead of holding a concurrency slot for ever."""
        self._renew_every_s = ttl / 3

    def start(self) -> None:
        """Start renewing the leases of this replica's runs every TTL/3 (a run's model call
        may outlast the lease TTL; a crashed replica stops renewing, so its leases expire)."""
        self.tasks.every(self._renew_every_s, self.renew_leases)

    def hold(self, ticket: RunTicket) -> None:
        self._held[ticket.run_id] = ticket

    def unhold(self, ticket: RunTicket) -> None:
        self._held.pop(ticket.run_id, None)

    async def renew_leases(self) -> None:
        """One renewal pass: one call per (store, tenant) with leases held here."""
        groups: dict[tuple[int, str], tuple[QuotaStore, list[str]]] = {}
        for ticket in list(self._held.values()):
            store = ticket.lease_store
            if store is None and ticket.open_reservations:
                store = ticket.open_reservations[0][1]
            if store is None or ticket.closed:
                continue
            key = (id(store), ticket.principal.tenant_id)
            groups.setdefault(key, (store, []))[1].append(ticket.run_id)
        for (_, tenant_id), (store, run_ids) in groups.items():
            await self.on_store(store, partial(_renew, tenant_id, run_ids))

    async def call(
        self,
        op: Callable[[QuotaStore], Awaitable[T]],
        undo: Callable[[QuotaStore], Awaitable[None]] | None = None,
    ) -> tuple[T, QuotaStore]:
        """Run `op` on Redis (time-boxed) or, when Redis is unavailable, per the failure mode.

        `undo` (idempotent) reverts whatever `op` may have done in Redis although its call
        failed (a timeout is ambiguous: only the reply may be lost); it is tried on Redis
        until it lands when `op` fails there.
        """
        if self.redis is None:
            return await op(self.memory), self.memory
        if self.breaker.usable():
            try:
                async with time_box(self.timeout_s):
                    result = await op(self.redis)
            except REDIS_ERRORS as exc:
                self.breaker.failed(exc)
                if undo is not None and self.retries is not None:
                    self.retries.add(undo)
            else:
                self.breaker.succeeded()
                return result, self.redis
        self.breaker.fallback()
        return await op(self.memory), self.memory

    async def on_store(
        self,
        store: QuotaStore,
        op: Callable[[QuotaStore], Awaitable[None]],
        *,
        retry: bool = False,
    ) -> None:
        """Settle or renew on the store the work was done on. A Redis failure of an idempotent
        `op` (`retry`: settlements, releases) is tried again until it lands; of another (a
        renewal: the next pass renews again) it is left to the TTL."""
        if store is self.memory:
            await op(store)
            return
        try:
            async with time_box(self.timeout_s):
                await op(store)
        except REDIS_ERRORS as exc:
            self.breaker.failed(exc)
            if retry and self.retries is not None:
                self.retries.add(op)
                return
            logger.warning("limits: could not settle in Redis (%s); TTL will", type(exc).__name__)

    async def open(
        self,
        principal: Principal,
        run_id: str,
        first_input: int | None = None,
        max_output: int | None = None,
        price: Price | None = None,
    ) -> RunTicket:
        """Admit a run: 429 when the tenant's token or spend windows or its concurrency cap
        are full.

        With `first_input` (the estimated input tokens of the run's first model call), the
        first call's reservation (tokens, and its priced estimate where spend is capped) is
        made in the same atomic step (one round trip for both). `price` is the run's model
        price in force at its start (None: unpriced, it reserves no spend).
        """
        limits = QuotaLimits.of(principal.limits)
        ticket = RunTicket(self, principal, run_id, limits, price)
        if not limits.any:
            return ticket
        # The admission runs in its own task: a request cancelled while it is in flight (the
        # client gone) must not leave a lease or reservation taken in Redis with no ticket to
        # release it; the ticket is closed as soon as the admission lands.
        admitting = asyncio.ensure_future(self._admit(ticket, first_input, max_output))
        try:
            await asyncio.shield(admitting)
        except asyncio.CancelledError:
            admitting.add_done_callback(partial(_close_abandoned, ticket))
            raise
        return ticket

    async def _admit(
        self, ticket: RunTicket, first_input: int | None, max_output: int | None
    ) -> None:
        principal, run_id, limits = ticket.principal, ticket.run_id, ticket.limits
        tenant = principal.tenant_id
        amount, spend, rid = 0, 0, ""
        if limits.metered and first_input is not None:
            output = max_output or self.default_max_output
            amount = first_input + output
            spend = ticket.estimate(first_input, output)
            rid = ticket.new_reservation_id()
        # A lost reply may hide a lease and a reservation taken in Redis while the run goes
        # on in memory: the undo gives both back.
        lease_id = run_id if limits.max_concurrent_runs is not None else None
        undo = partial(_release, tenant, lease_id, _maybe_reserved(rid, amount, spend))
        admission, store = await self.call(
            lambda s: s.admit(tenant, run_id, limits, rid, amount, spend), undo
        )
        ticket.admission = admission
        ticket.admitted_at = time.monotonic()
        if admission.code != OK:
            code = _CODES[admission.code]
            message = _MESSAGES.get(
                code, f"Too many runs in flight (max {limits.max_concurrent_runs})."
            )
            retry = _retry_s(admission.code, admission.retry_s)
            error = rejection(principal, code, message, retry)
            error.headers.update(ticket.token_headers())
            raise error
        if limits.max_concurrent_runs is not None:
            ticket.lease_store = store
        if limits.max_concurrent_runs is not None or limits.metered:
            self.hold(ticket)  # its lease and reservations are renewed while it runs
        first = admission.reservation
        if first is not None:
            if first.code != OK:
                # The first call cannot be reserved: the run is refused before it starts, as
                # when a window is exhausted (a plain run and a stream both get the 429,
                # nothing ran, nothing is recorded); the lease is given back.
                error = ticket._refused(first, first.amount, spend)
                await ticket.close()
                raise error
            ticket.open_reservations.append((first, store))
            ticket.prepaid = first

    async def seed(
        self, tenant_id: str, *, tokens_today: int, spent_today: int, spent_month: int
    ) -> None:
        """Count what the tenant used today and this month (its usage records) in its day and
        month windows: a budget set mid-day or mid-month holds what was used before it was
        set (windows are only counted while a limit applies). Never lowers a counter. With
        Redis unavailable in `closed` mode the windows count from now on (logged)."""
        day = int(time.time()) // 86_400
        try:
            await self.call(
                lambda s: s.seed(tenant_id, day, tokens_today, spent_today, spent_month)
            )
        except ServiceUnavailableError:
            logger.warning("limits: usage before a new budget not counted (Redis unavailable)")

    async def peek(self, principal: Principal) -> Snapshot:
        """Current usage of the tenant (for `GET /v1/limits`)."""
        snapshot, _ = await self.call(lambda s: s.peek(principal.tenant_id))
        return snapshot

    async def drain(self) -> None:
        """Stop renewing and wait for background settlements (at shutdown); a Redis step
        still to be tried again gets one last try."""
        if self.retries is not None:
            self.retries.stop()
        await self.tasks.drain()
        if self.retries is not None:
            await self.retries.wait()


class RunTicket:
    """One run's lease and token reservations; every path ends in `close()`.

    Round trips: admission (with the first call's reservation), one per further model call
    (its reservation carries the settlement of the call before), one at the end (settles the
    last call, settles unanswered calls to zero, releases the lease).
    """

    def __init__(
        self,
        service: QuotaService,
        principal: Principal,
        run_id: str,
        limits: QuotaLimits,
        price: Price | None = None,
    ) -> None:
        self.service = service
        self.principal = principal
        self.run_id = run_id
        self.limits = limits
        self.price = price if limits.spend_metered else None
        """The run's model price for spend reservations (None: spend not capped, or unpriced)."""
        self.admission: Admission | None = None
        self.admitted_at = 0.0
        """`time.monotonic()` when the admission's answer came (its windows' "now")."""
        self.lease_store: QuotaStore | None = None
        self.prepaid: Reservation | None = None
        """The first call's reservation made at admission, until the first call uses it."""
        self.open_reservations: list[tuple[Reservation, QuotaStore]] = []
        """Reservations of calls not answered yet (oldest first)."""
        self.unsettled: list[tuple[Reservation, int, int, QuotaStore]] = []
        """Answered calls (reservation, real tokens, real micro-dollars) whose settlement rides
        on the next step."""
        self.spent = 0
        """Micro-dollars the run's answered calls cost (shown in a plain run's headers)."""
        self.closed = False
        self.closing: asyncio.Future[None] | None = None
        """`close()` running in the background, once `begin_close()` started it."""
        self._seq = 0

    def estimate(self, input_tokens: int, max_output: int) -> int:
        """The priced upper estimate of a model call, in micro-dollars (0: nothing to cap)."""
        return estimate_micro(self.price, input_tokens, max_output)

    def new_reservation_id(self) -> str:
        self._seq += 1
        return f"{self.run_id}:{self._seq}"

    async def before_call(
        self, estimated_input: int, max_output: int | None, price: Price | None
    ) -> None:
        """Reserve tokens for the next model call (and renew the lease); 429 when over quota.

        `price` is the called model's price in force when the run started (`self.price` for
        the run's own model; a handoff target or an input classifier may use another model),
        None when it is unpriced or spend is not capped: the call's spend is estimated at it.
        """
        if not self.limits.metered:
            return
        output = max_output or self.service.default_max_output
        amount = estimated_input + output
        spend = estimate_micro(
            price if self.limits.spend_metered else None, estimated_input, output
        )
        prepaid, self.prepaid = self.prepaid, None
        if prepaid is not None:
            if amount <= prepaid.amount and spend <= prepaid.spend:
                return  # reserved at admission, for at least this much
            # The estimate grew (rare): reserve it anew, the admission's reservation settles to 0.
            for held in [o for o in self.open_reservations if o[0] is prepaid]:
                self.open_reservations.remove(held)
                self.unsettled.append((prepaid, 0, 0, held[1]))
        tenant, run_id, limits = self.principal.tenant_id, self.run_id, self.limits
        holds_lease = self.lease_store is not None
        rid = self.new_reservation_id()
        pending, self.unsettled = self.unsettled, []
        tried: list[QuotaStore] = []

        def folded(s: QuotaStore | None) -> list[Settlement]:
            return [(r, actual, spent) for r, actual, spent, held in pending if held is s]

        def reserve(s: QuotaStore) -> Awaitable[Reservation]:
            tried.append(s)
            return s.reserve(tenant, run_id, rid, amount, limits, holds_lease, folded(s), spend)

        # When the step fails in Redis it may still have run there: its settlements (applied
        # at most once) and the reservation it may have made (given back) are tried again.
        redis_items = folded(self.service.redis) + _maybe_reserved(rid, amount, spend)
        undo = partial(_release, tenant, None, redis_items)
        try:
            reservation, store = await self.service.call(reserve, undo)
        finally:
            await self._settle_rest(pending, tried)
        if reservation.code != OK:
            raise self._refused(reservation, amount, spend)
        self.open_reservations.append((reservation, store))

    def _refused(self, reservation: Reservation, amount: int, spend: int) -> RateLimitedError:
        """The 429 of a refused reservation of `amount` tokens, `spend` micro-dollars."""
        code = _CODES[reservation.code]
        never = False
        if reservation.code in (SPD, SPM):
            message = f"Spend limit reached ({code}): the next model call may cost more."
            day = reservation.code == SPD
            budget = self.limits.spend_per_day if day else self.limits.spend_per_month
            if budget is not None and spend > budget:
                never = True
                message = (
                    f"Spend limit reached ({code}): the next model call is estimated at "
                    f"${micro_to_usd(spend)}, more than the whole limit "
                    f"(${micro_to_usd(budget)}), so it can never fit: shorten the input or lower "
                    "the agent's max_tokens, or raise the limit."
                )
        else:
            message = (
                f"Token quota exhausted ({code}): the next model call needs up to {amount} tokens."
            )
            window = self.limits.tokens_per_minute if reservation.code == TPM else None
            if reservation.code == TPD:
                window = self.limits.tokens_per_day
            never = window is not None and amount > window
            if never:
                # Waiting cannot help: say so (OpenAI's "request too large").
                message += (
                    f" That is more than the whole limit ({window}), so this call can never"
                    " fit: shorten the input or lower the agent's max_tokens, or raise the"
                    " limit."
                )
        retry_s = _retry_s(reservation.code, reservation.retry_s)
        error = rejection(self.principal, code, message, retry_s)
        # The windows as the refusal found them, not as admission did: a run stopped mid-run
        # by tokens_per_minute must not answer its 429 with the minute's whole budget left.
        admission = self.admission
        tpm_reset_s = admission.tpm_reset_s if admission is not None else 60.0
        if reservation.code == TPM:
            tpm_reset_s = retry_s
        error.headers.update(
            token_headers(self.limits, reservation.tpm_used, tpm_reset_s, reservation.tpd_used)
        )
        error.headers.update(spend_headers(self.limits, reservation.spd_used, reservation.spm_used))
        if never:
            # Retry-After stays (every 429 has one), but the OpenAI clients' retry rule reads
            # this first: they give up at once instead of waiting twice for nothing.
            error.headers["x-should-retry"] = "false"
        return error

    async def after_call(self, actual: int, spent: int = 0) -> None:
        """Record what the oldest open call really used (tokens, micro-dollars); it settles
        with the next step."""
        self.spent += spent
        if self.open_reservations:
            reservation, store = self.open_reservations.pop(0)
            self.unsettled.append((reservation, actual, spent, store))

    async def _settle_rest(
        self, pending: list[tuple[Reservation, int, int, QuotaStore]], tried: list[QuotaStore]
    ) -> None:
        """Settle what the step did not carry, on its own store (a store that was tried and
        failed may have applied it: that is left to the TTL, as any failed settlement)."""
        tenant = self.principal.tenant_id
        for store in _stores(s for _, _, _, s in pending):
            if any(store is t for t in tried):
                continue
            items: list[Settlement] = [
                (r, actual, spent) for r, actual, spent, held in pending if held is store
            ]
            await self.service.on_store(store, partial(_release, tenant, None, items), retry=True)

    async def close(self) -> None:
        """Settle what is open (unanswered calls to zero) and release the lease. Idempotent."""
        if self.closed:
            return
        self.closed = True
        self.service.unhold(self)
        self.prepaid = None
        tenant = self.principal.tenant_id
        pending = self.unsettled + [(r, 0, 0, s) for r, s in self.open_reservations]
        self.unsettled, self.open_reservations = [], []
        stores = _stores(s for _, _, _, s in pending)
        if self.lease_store is not None and not any(self.lease_store is s for s in stores):
            stores.append(self.lease_store)
        for store in stores:
            run_id = self.run_id if store is self.lease_store else None
            items: list[Settlement] = [
                (r, actual, spent) for r, actual, spent, held in pending if held is store
            ]
            await self.service.on_store(store, partial(_release, tenant, run_id, items), retry=True)

    def begin_close(self) -> asyncio.Future[None]:
        """Start `close()` in its own task (once); await the result to wait for it."""
        if self.closing is None:
            self.closing = self.service.tasks.run(self.close())
        return self.closing

    def close_soon(self) -> None:
        """`close()` without waiting (from a cancelled task)."""
        if not self.closed:
            self.service.tasks.run(self.close())

    def token_headers(self, spent: int = 0) -> dict[str, str]:
        """The x-ratelimit-*-tokens trio (per-minute window when set) and the -spend-usd trio
        (the tighter spend window) as of admission; once the run is done (`spent`: its own
        tokens, > 0), with its own tokens counted in the token windows and its own cost in the
        spend windows."""
        admission = self.admission
        if admission is None:
            return {}
        reset_s = admission.tpm_reset_s
        if spent and not admission.tpm_used:
            # The minute was empty (reset 0): now it holds the run's own tokens, reserved at
            # admission, which leave it a minute after that.
            reset_s = max(1.0, 60.0 - (time.monotonic() - self.admitted_at))
        headers = token_headers(
            self.limits, admission.tpm_used + spent, reset_s, admission.tpd_used + spent
        )
        cost = self.spent if spent else 0
        headers.update(
            spend_headers(self.limits, admission.spd_used + cost, admission.spm_used + cost)
        )
        return headers


def _close_abandoned(ticket: RunTicket, admitting: asyncio.Future[None]) -> None:
    """The admission of a cancelled request landed: give back what it took."""
    if not admitting.cancelled() and admitting.exception() is None:
        ticket.close_soon()


async def _renew(tenant_id: str, run_ids: list[str], store: QuotaStore) -> None:
    await store.renew(tenant_id, run_ids)


async def _release(
    tenant_id: str, run_id: str | None, settlements: list[Settlement], store: QuotaStore
) -> None:
    await store.release(tenant_id, run_id, settlements)


def _maybe_reserved(reservation_id: str, amount: int, spend: int) -> list[Settlement]:
    """The settlement to zero of a reservation a failed Redis step may have made (none when it
    reserved nothing). Its second and day are this replica's guess of Redis's: a settlement
    leaves a minute bucket or a day key it does not find alone (the minute window rolls on)."""
    if not reservation_id or not (amount or spend):
        return []
    now_s = int(time.time())
    guess = Reservation(OK, reservation_id, amount, 0, 0, 0.0, now_s, now_s // 86_400, spend)
    return [(guess, 0, 0)]


def _stores(stores: Iterable[QuotaStore]) -> list[QuotaStore]:
    """The distinct stores among `stores`, in order (by identity)."""
    seen: list[QuotaStore] = []
    for store in stores:
        if not any(store is s for s in seen):
            seen.append(store)
    return seen
