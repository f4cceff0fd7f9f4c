"""`LeanScript`: a Lua script called on a pooled connection of a redis-py client directly.

The limits make up to three script calls per request (the request window, the admission, the
release). redis-py's `AsyncScript` goes through `Redis.execute_command`: a retry object with
callbacks, the command's option parsing and the client's observability hooks, about 30 µs of
CPU per call on this project's VM (105 -> 75 µs per `EVALSHA`, `bench/README.md`). This calls
the same redis-py connection methods that path ends in, with the same outcome:

- the same command (`EVALSHA sha numkeys keys... args...`, packed by the connection) and the
  same reply or `ResponseError`;
- a `ConnectionError` (a pooled connection that died, as after a Redis restart) is retried
  once at once on a fresh connection, as the client is configured to (`create_redis`); a
  timeout is not retried;
- `NOSCRIPT` (a restarted or flushed Redis) loads the script and calls it again;
- a call cancelled or failed mid-way leaves no reply behind: redis-py's connection
  disconnects itself on any error while writing or reading, and the pool reconnects it.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import Any

from redis.asyncio import Redis
from redis.asyncio.connection import AbstractConnection
from redis.exceptions import ConnectionError, NoScriptError


class LeanScript:
    """`await script(keys=[...], args=[...])`, as redis-py's `register_script` objects."""

    __slots__ = ("client", "script", "sha")

    def __init__(self, client: Redis, script: str) -> None:
        self.client = client
        self.script = script
        self.sha = hashlib.sha1(script.encode()).hexdigest()  # noqa: S324 (Redis's script id)

    async def __call__(self, keys: Sequence[Any] = (), args: Sequence[Any] = ()) -> Any:
        pool = self.client.connection_pool
        conn = await pool.get_connection()  # type: ignore[no-untyped-call]
        try:
            try:
                return await self._evalsha(conn, keys, args)
            except ConnectionError:
                await conn.disconnect()
                return await self._evalsha(conn, keys, args)  # reconnects first
        finally:
            await pool.release(conn)

    async def _evalsha(
        self, conn: AbstractConnection, keys: Sequence[Any], args: Sequence[Any]
    ) -> Any:
        try:
            return await _call(conn, "EVALSHA", self.sha, len(keys), *keys, *args)
        except NoScriptError:
            sha = await _call(conn, "SCRIPT", "LOAD", self.script)
            self.sha = sha.decode() if isinstance(sha, bytes) else sha
            return await _call(conn, "EVALSHA", self.sha, len(keys), *keys, *args)


async def _call(conn: AbstractConnection, *command: Any) -> Any:
    await conn.send_packed_command(conn.pack_command(*command), check_health=False)
    return await conn.read_response()
