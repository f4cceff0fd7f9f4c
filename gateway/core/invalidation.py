"""Cache invalidation across replicas through Redis pub/sub.

An admin mutation (key revoked or re-dated, tenant suspended / changed / deleted, JWT config
changed, agent version changed) calls `Invalidator.tenant_changed(tenant_id)` after its commit.
That drops the tenant's cached principals, JWT issuer entries and active agent versions in this
process at once and publishes `{"tenant_id": …}` on `<GATEWAY_REDIS_KEY_PREFIX>invalidate`; the
subscriber task of every other replica applies the same drop when the message arrives (measured
in milliseconds). A lost message is bounded by the caches' TTL (≤ 5 s). After a lost Redis
connection the subscriber re-subscribes with backoff and drops every cached entry once, since
messages sent meanwhile are gone. Embedded mode (no Redis): local drop only (one process).

The caches are anything with `invalidate_tenant` and `clear` (`TenantCache`): this module knows
no cache of the data plane, the app hands them in.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import secrets
from collections.abc import Sequence
from typing import Protocol

from redis.asyncio import Redis
from redis.exceptions import RedisError

from gateway.core.config import Settings

logger = logging.getLogger("gateway.core.invalidation")

MAX_BACKOFF_S = 5.0


class TenantCache(Protocol):
    """A per-process cache whose entries can be dropped per tenant or all at once."""

    def invalidate_tenant(self, tenant_id: str) -> object:
        """Drop the entries of one tenant."""
        ...

    def clear(self) -> None:
        """Drop every entry."""
        ...


class Invalidator:
    """Publishes and applies tenant invalidations (the control plane's `ChangeNotifier`)."""

    def __init__(
        self,
        settings: Settings,
        *,
        caches: Sequence[TenantCache],
        redis: Redis | None,
    ) -> None:
        self._settings = settings
        self._caches = tuple(caches)
        self._redis = redis
        self.channel = f"{settings.redis_key_prefix}invalidate"
        self._origin = secrets.token_hex(8)
        self._task: asyncio.Task[None] | None = None
        self.subscribed = asyncio.Event()
        self.received = 0

    async def tenant_changed(self, tenant_id: str) -> None:
        """Drop the tenant's cached state here now, and on every replica via Redis."""
        self.apply(tenant_id)
        if self._redis is None:
            return
        message = json.dumps({"tenant_id": tenant_id, "origin": self._origin})
        try:
            await self._redis.publish(self.channel, message)
        except (RedisError, OSError) as exc:
            # Other replicas fall back to the cache TTL for this change.
            logger.warning("invalidation not published (%s)", type(exc).__name__)

    def apply(self, tenant_id: str) -> None:
        """Drop one tenant's entries from every cache of this process."""
        for cache in self._caches:
            cache.invalidate_tenant(tenant_id)

    def apply_all(self) -> None:
        """Drop every cached entry (after missed messages)."""
        for cache in self._caches:
            cache.clear()

    def start(self) -> None:
        """Start the subscriber task (only when Redis is configured)."""
        if self._settings.redis_url:
            self._task = asyncio.get_running_loop().create_task(
                self._listen_forever(), name="cache-invalidation"
            )

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    def _on_message(self, data: bytes) -> None:
        try:
            message = json.loads(data)
            tenant_id, origin = message["tenant_id"], message.get("origin")
        except (ValueError, KeyError, TypeError):
            logger.warning("ignored a malformed invalidation message")
            return
        self.received += 1
        if origin != self._origin and isinstance(tenant_id, str):
            self.apply(tenant_id)

    async def _listen_forever(self) -> None:
        backoff = 0.1
        while True:
            try:
                await self._listen()
            except (RedisError, OSError) as exc:
                logger.warning("invalidation subscriber lost Redis (%s)", type(exc).__name__)
            if self.subscribed.is_set():
                backoff = 0.1
            self.subscribed.clear()
            await asyncio.sleep(backoff)
            backoff = min(MAX_BACKOFF_S, backoff * 2)

    async def _listen(self) -> None:
        assert self._settings.redis_url is not None
        # Its own connection without a read timeout: a subscriber waits for messages.
        client: Redis = Redis.from_url(
            self._settings.redis_url,
            socket_connect_timeout=self._settings.redis_timeout_ms / 1000,
            socket_keepalive=True,
        )
        try:
            async with client.pubsub(ignore_subscribe_messages=True) as pubsub:
                await pubsub.subscribe(self.channel)
                self.apply_all()
                self.subscribed.set()
                async for message in pubsub.listen():
                    if message.get("type") == "message":
                        self._on_message(message["data"])
        finally:
            await client.aclose()
