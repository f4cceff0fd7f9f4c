"""One turn at a time per conversation: a lock taken without waiting (busy -> 409).

With Redis the lock is `SET <prefix>conv-lock:<id> <token> NX PX <ttl>`, released by a
compare-and-delete script so that a turn whose lock expired never frees the next turn's. Every
call is time-boxed (`GATEWAY_REDIS_TIMEOUT_MS`). While Redis is unavailable (the limits'
`RedisBreaker`, shared with the request limiter and quotas) `GATEWAY_LIMITS_FAILURE_MODE`
decides: `open` takes the lock in this process's memory (turns on other replicas are then not
excluded), `closed` answers 503. Without Redis the lock is in memory (one process).

The TTL (`GATEWAY_LIMITS_LEASE_TTL_S`) bounds how long a crashed replica's lock blocks a
conversation. A replica renews the locks its turns hold every TTL/3 (one compare-and-expire
script call for all of them), so a turn may run longer than the TTL and still exclude others;
a lock whose renewal failed (Redis down for longer than the TTL) can lapse. A release whose
call failed is tried again in the background until it lands (or the TTL frees the lock), so a
short Redis pause does not leave a finished turn's conversation busy for a whole TTL.
"""

from __future__ import annotations

import asyncio
import logging
import math
import secrets
import time
import weakref
from collections.abc import Awaitable

from redis.asyncio import Redis

from gateway.core.background import BackgroundTasks
from gateway.core.errors import ConflictError, ServiceUnavailableError
from gateway.core.redis_script import LeanScript
from gateway.limits.breaker import REDIS_ERRORS, RedisBreaker

logger = logging.getLogger("gateway.conversations")

RELEASE_SCRIPT = """
if redis.call('get', KEYS[1]) == ARGV[1] then
  return redis.call('del', KEYS[1])
end
return 0
"""
RENEW_SCRIPT = """
local renewed = 0
for i, key in ipairs(KEYS) do
  if redis.call('get', key) == ARGV[i + 1] then
    redis.call('pexpire', key, ARGV[1])
    renewed = renewed + 1
  end
end
return renewed
"""
"""KEYS = the held locks, ARGV = [ttl ms, token of each]; a lock taken over by another turn
(expired, then acquired again) is left alone."""
RELEASE_RETRY_S = 0.25
RELEASE_RETRY_MAX_S = 5.0
"""A failed release is tried again after 0.25 s, doubling up to 5 s, until the TTL."""
MEMORY_PURGE_AT = 10_000
"""Expired in-memory locks (a turn that never released) are purged past this many entries."""


def busy() -> ConflictError:
    return ConflictError(
        "Another turn of this conversation is in progress; retry when it has finished.",
        code="conversation_busy",
        param="conversation_id",
    )


class MemoryLocks:
    """Per-process locks with an expiry; entries live only while a turn holds them."""

    def __init__(self) -> None:
        self._held: dict[str, tuple[str, float]] = {}

    def acquire(self, key: str, token: str, ttl_s: float) -> bool:
        now = time.monotonic()
        held = self._held.get(key)
        if held is not None and held[1] > now:
            return False
        if len(self._held) >= MEMORY_PURGE_AT:
            self._held = {k: v for k, v in self._held.items() if v[1] > now}
        self._held[key] = (token, now + ttl_s)
        return True

    def release(self, key: str, token: str) -> None:
        held = self._held.get(key)
        if held is not None and held[0] == token:
            del self._held[key]

    def renew(self, key: str, token: str, ttl_s: float) -> None:
        held = self._held.get(key)
        if held is not None and held[0] == token:
            self._held[key] = (token, time.monotonic() + ttl_s)


class HeldLock:
    """A conversation lock held by one turn; `release()` frees it exactly once."""

    def __init__(self, locks: ConversationLocks, key: str, token: str, in_redis: bool) -> None:
        self.locks = locks
        self.key = key
        self.token = token
        self.in_redis = in_redis
        self.released = False

    def release(self) -> Awaitable[None]:
        """Free the lock. The Redis call runs in its own task, so it completes even when the
        caller is being cancelled (client gone); await the result to wait for it."""
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        if self.released:
            future.set_result(None)
            return future
        self.released = True
        self.locks.held.pop(self.token, None)
        if not self.in_redis:
            self.locks.memory.release(self.key, self.token)
            future.set_result(None)
            return future
        # Shielded: a cancelled awaiter must not cancel the release with it.
        return asyncio.shield(
            self.locks.tasks.run(self.locks.release_in_redis(self.key, self.token))
        )


class ConversationLocks:
    """Takes and frees conversation locks in Redis (when configured) or memory."""

    def __init__(
        self,
        *,
        redis: Redis | None,
        breaker: RedisBreaker,
        prefix: str,
        ttl_s: float,
        timeout_s: float,
    ) -> None:
        self.redis = redis
        self.breaker = breaker
        self.prefix = prefix
        self.ttl_ms = max(1, int(ttl_s * 1000))
        self.timeout_s = timeout_s
        self.memory = MemoryLocks()
        self._release = LeanScript(redis, RELEASE_SCRIPT) if redis is not None else None
        self._renew = LeanScript(redis, RENEW_SCRIPT) if redis is not None else None
        self.tasks = BackgroundTasks("conversation-lock-keeper")
        self._retrying: dict[asyncio.Future[None], tuple[str, str]] = {}
        """Releases being tried again (task -> key, token)."""
        self.held: weakref.WeakValueDictionary[str, HeldLock] = weakref.WeakValueDictionary()
        """The locks this replica's turns hold (token -> lock), renewed by the periodic pass. Weak:
        a lock its turn dropped without releasing (a bug) is no longer renewed, so the TTL
        still frees it rather than the renewals keeping the conversation busy for ever."""

    def start(self) -> None:
        """Start renewing held locks every TTL/3."""
        self.tasks.every(self.ttl_ms / 3000, self.renew)

    async def renew(self) -> None:
        """One renewal pass over the held locks: memory ones here, Redis ones in one call."""
        in_redis: list[HeldLock] = []
        for lock in list(self.held.values()):
            if lock.in_redis:
                in_redis.append(lock)
            else:
                self.memory.renew(lock.key, lock.token, self.ttl_ms / 1000)
        if not in_redis or self._renew is None:
            return
        try:
            async with asyncio.timeout(self.timeout_s):
                await self._renew(
                    keys=[lock.key for lock in in_redis],
                    args=[self.ttl_ms, *(lock.token for lock in in_redis)],
                )
        except REDIS_ERRORS as exc:
            self.breaker.failed(exc)
            logger.warning("conversation locks not renewed (%s)", type(exc).__name__)

    async def acquire(self, conversation_id: str) -> HeldLock:
        """The lock of this conversation, or 409 `conversation_busy` (no waiting)."""
        key = f"{self.prefix}conv-lock:{conversation_id}"
        token = secrets.token_hex(16)
        if self.redis is not None and self.breaker.usable():
            try:
                async with asyncio.timeout(self.timeout_s):
                    taken = await self.redis.set(key, token, nx=True, px=self.ttl_ms)
            except REDIS_ERRORS as exc:
                self.breaker.failed(exc)
            else:
                self.breaker.succeeded()
                if not taken:
                    raise busy()
                return self._hold(HeldLock(self, key, token, in_redis=True))
        if self.redis is not None and not self.breaker.fail_open:
            raise ServiceUnavailableError(
                "Conversations cannot be locked right now; retry shortly.",
                code="conversation_lock_unavailable",
                headers={"Retry-After": str(max(1, math.ceil(self.breaker.retry_s)))},
            )
        if not self.memory.acquire(key, token, self.ttl_ms / 1000):
            raise busy()
        return self._hold(HeldLock(self, key, token, in_redis=False))

    def _hold(self, lock: HeldLock) -> HeldLock:
        self.held[lock.token] = lock
        return lock

    async def release_in_redis(self, key: str, token: str) -> None:
        """Compare-and-delete. A release that fails (Redis paused or away for longer than
        `GATEWAY_REDIS_TIMEOUT_MS`) is tried again in the background until it lands or the
        lock's TTL would have freed it anyway: the conversation was left busy for a whole TTL
        (two minutes by default, DELETE refused too) after a pause of a second or two."""
        if await self._try_release(key, token):
            return
        logger.warning("conversation lock not released; trying again in the background")
        expires = time.monotonic() + self.ttl_ms / 1000
        retry = asyncio.ensure_future(self._release_later(key, token, expires))
        self._retrying[retry] = (key, token)
        retry.add_done_callback(self._retried)

    def _retried(self, retry: asyncio.Future[None]) -> None:
        self._retrying.pop(retry, None)

    async def _try_release(self, key: str, token: str) -> bool:
        assert self._release is not None
        try:
            async with asyncio.timeout(self.timeout_s):
                await self._release(keys=[key], args=[token])
        except REDIS_ERRORS as exc:
            self.breaker.failed(exc)
            return False
        self.breaker.succeeded()
        return True

    async def _release_later(self, key: str, token: str, expires: float) -> None:
        delay = RELEASE_RETRY_S
        while time.monotonic() + delay < expires:
            await asyncio.sleep(delay)
            if await self._try_release(key, token):
                return
            delay = min(delay * 2, RELEASE_RETRY_MAX_S)
        logger.warning("conversation lock not released; its TTL will free it")

    async def drain(self) -> None:
        """Stop renewing and wait for pending releases (at shutdown); a release still being
        tried again gets one last try (else the TTL frees it)."""
        await self.tasks.drain()
        pending = list(self._retrying.items())
        for retry, _ in pending:
            retry.cancel()
        for _, (key, token) in pending:
            await self._try_release(key, token)
