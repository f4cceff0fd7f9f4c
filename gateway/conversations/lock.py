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
a lock whose renewal failed (Redis down for longer than the TTL) can lapse.
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
MEMORY_PURGE_AT = 10_000
"""Expired in-memory locks (a turn that never released) are purged past this many entries."""


def busy() -> ConflictError:
    return ConflictError(
        "Another turn of this conversation is in progress; retry when it has finished.",
        code="conversation_busy",
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
        """Compare-and-delete; on failure the TTL frees the lock."""
        assert self._release is not None
        try:
            async with asyncio.timeout(self.timeout_s):
                await self._release(keys=[key], args=[token])
        except REDIS_ERRORS as exc:
            self.breaker.failed(exc)
            logger.warning("conversation lock not released (%s); TTL will", type(exc).__name__)

    async def drain(self) -> None:
        """Stop renewing and wait for pending releases (at shutdown)."""
        await self.tasks.drain()
