"""A TCP proxy of the fault suite's own, to put in front of PostgreSQL (or Redis) and break.

It runs its own asyncio loop in a thread, so synchronous tests that drive real gateway
processes can switch its mode at any moment:

- `forward()`: bytes flow both ways (the normal state).
- `swallow()`: connections stay open and new ones are accepted, but nothing is forwarded any
  more; bytes are held back (like packets lost in a partition) and flow again on `forward()`.
  A client without its own timeouts hangs for as long as this lasts.
- `cut()`: every open connection is reset and new ones are reset as soon as they arrive (like
  a crashed server host). `forward()` ends it.

    with FaultProxy("127.0.0.1", 5432) as proxy:
        url = proxy.rewrite("postgresql+asyncpg://postgres@127.0.0.1:5432/test")
        proxy.swallow()
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Coroutine
from typing import Any, Literal, TypeVar
from urllib.parse import urlsplit, urlunsplit

Mode = Literal["forward", "swallow", "cut"]
T = TypeVar("T")


class FaultProxy:
    """Forwards 127.0.0.1:<port> to `target_host:target_port`, with faults on demand."""

    def __init__(self, target_host: str, target_port: int) -> None:
        self.target = (target_host, target_port)
        self.port = 0
        self.mode: Mode = "forward"
        self.accepted = 0
        """Client connections accepted so far (for measurements)."""
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._server: asyncio.Server | None = None
        self._flowing: asyncio.Event | None = None
        self._transports: set[asyncio.Transport] = set()

    def __enter__(self) -> FaultProxy:
        self.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.stop()

    def start(self) -> int:
        """Listen on a free local port; returns it."""
        self._thread.start()
        self._call(self._start())
        return self.port

    def stop(self) -> None:
        self._call(self._stop())
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=5)
        self._loop.close()

    def rewrite(self, url: str) -> str:
        """`url` with its host and port replaced by the proxy's."""
        parts = urlsplit(url)
        userinfo = parts.netloc.rpartition("@")[0]
        netloc = f"{userinfo}@127.0.0.1:{self.port}" if userinfo else f"127.0.0.1:{self.port}"
        return urlunsplit(parts._replace(netloc=netloc))

    def forward(self) -> None:
        self._call(self._set_mode("forward"))

    def swallow(self) -> None:
        self._call(self._set_mode("swallow"))

    def cut(self) -> None:
        self._call(self._set_mode("cut"))

    def _call(self, coroutine: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coroutine, self._loop).result(timeout=10)

    async def _start(self) -> None:
        self._flowing = asyncio.Event()
        self._flowing.set()
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]

    async def _stop(self) -> None:
        self._reset_all()
        if self._server is not None:
            self._server.close()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(1):
                    await self._server.wait_closed()

    async def _set_mode(self, mode: Mode) -> None:
        assert self._flowing is not None
        self.mode = mode
        if mode == "cut":
            self._reset_all()
        if mode == "swallow":
            self._flowing.clear()
        else:
            self._flowing.set()

    def _reset_all(self) -> None:
        for transport in list(self._transports):
            transport.abort()
        self._transports.clear()

    def _track(self, writer: asyncio.StreamWriter) -> None:
        transport = writer.transport
        assert isinstance(transport, asyncio.Transport)
        self._transports.add(transport)

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.accepted += 1
        self._track(writer)
        assert self._flowing is not None
        if self.mode == "cut":
            writer.transport.abort()
            return
        await self._flowing.wait()  # a connection made while swallowing waits, unanswered
        if self.mode == "cut":
            writer.transport.abort()
            return
        try:
            upstream_reader, upstream_writer = await asyncio.open_connection(*self.target)
        except OSError:
            writer.transport.abort()
            return
        self._track(upstream_writer)
        await asyncio.gather(
            self._pump(reader, upstream_writer), self._pump(upstream_reader, writer)
        )

    async def _pump(self, source: asyncio.StreamReader, sink: asyncio.StreamWriter) -> None:
        assert self._flowing is not None
        try:
            while data := await source.read(65536):
                await self._flowing.wait()  # swallowing: held back, not delivered
                if sink.transport.is_closing():
                    break
                sink.write(data)
                await sink.drain()
        except (ConnectionError, OSError):
            pass
        finally:
            with contextlib.suppress(Exception):
                sink.close()
