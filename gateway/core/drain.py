"""A replica's graceful shutdown on SIGTERM: one `Drain` per process, shared by the server that
receives the signal (`gateway.serving.server`) and the app that finishes its work.

    serving --SIGTERM--> draining --delay--> stopping --grace--> expired --> exit 0
                         /readyz 503         listener closed      streams still open end
                         Connection: close   idle WebSockets      with run.failed
                                             closed (1012)        `shutting_down`, plain
                                                                  runs answer 503

`draining` starts at the signal: the load balancer sees `/readyz` fail while the replica still
serves whatever it is sent (every response asks the client to close its connection, so that no
idle keep-alive connection is left to break later). After `GATEWAY_DRAIN_DELAY_S` the listener
closes (`stopping`); in-flight runs and streams go on. At the deadline
(`GATEWAY_SHUTDOWN_GRACE_S` after that) every run still waiting inside `until_deadline()` is
interrupted with `ShuttingDownError`, which the run turns into its normal failure path (the
lease released, the usage record written, the stream's `run.failed` event sent).

The state is plain attributes written by the signal handler and read on the event loop; the
transitions with effects on the loop (`stop`, `expire`) are called by the server on the loop.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from types import TracebackType

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from gateway.core.errors import ShuttingDownError


class Drain:
    """The shutdown state of this process's app."""

    def __init__(self, delay_s: float, grace_s: float) -> None:
        self.delay_s = delay_s
        self.grace_s = grace_s
        self.draining = False
        """SIGTERM received: not ready any more (the app still serves)."""
        self.stopping = False
        """No new connections; WebSockets close once their turn ends."""
        self.expired = False
        """The grace is over: what still runs is ended now."""
        self.stop_at = float("inf")
        """`time.monotonic()` when the listener closes."""
        self.deadline = float("inf")
        """`time.monotonic()` when the runs still in flight are ended."""
        self._scopes: set[asyncio.Timeout] = set()
        self._on_stop: set[Callable[[], None]] = set()

    def begin(self, *, skip_delay: bool = False) -> None:
        """Start draining (signal-safe: attribute writes only). A second call hurries the
        shutdown: stop and expire at once."""
        now = time.monotonic()
        if self.draining:
            self.stop_at = self.deadline = min(self.deadline, now)
            return
        self.stop_at = now + (0.0 if skip_delay else self.delay_s)
        self.deadline = self.stop_at + self.grace_s
        self.draining = True

    def stop(self) -> None:
        """The listener is closed: tell the long-lived connections (on the loop)."""
        self.stopping = True
        for callback in list(self._on_stop):
            callback()

    def expire(self) -> None:
        """The grace is over: interrupt every run waiting in `until_deadline()` (on the loop)."""
        self.expired = True
        now = asyncio.get_running_loop().time()
        for timeout in list(self._scopes):
            timeout.reschedule(now)

    def on_stop(self, callback: Callable[[], None]) -> Callable[[], None]:
        """Call `callback` when the replica stops accepting; returns the unsubscribe."""
        if self.stopping:
            callback()
            return lambda: None
        self._on_stop.add(callback)
        return lambda: self._on_stop.discard(callback)

    def until_deadline(self) -> DeadlineScope:
        """`async with drain.until_deadline(): await work`: `ShuttingDownError` is raised in
        the block when the grace ends while it waits. Hold it only around awaits of the run
        itself (never across a `yield`): the interruption cancels the task that entered it."""
        return DeadlineScope(self)


class DeadlineScope:
    """An `asyncio.Timeout` without a deadline until the drain expires."""

    __slots__ = ("_drain", "_timeout")

    def __init__(self, drain: Drain) -> None:
        self._drain = drain
        self._timeout: asyncio.Timeout | None = None

    async def __aenter__(self) -> None:
        when = asyncio.get_running_loop().time() if self._drain.expired else None
        self._timeout = timeout = asyncio.timeout_at(when)
        self._drain._scopes.add(timeout)
        await timeout.__aenter__()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        timeout = self._timeout
        assert timeout is not None
        self._drain._scopes.discard(timeout)
        try:
            await timeout.__aexit__(exc_type, exc, tb)
        except TimeoutError:
            if timeout.expired():
                raise ShuttingDownError() from None
            raise


class DrainMiddleware:
    """While draining, every HTTP response carries `Connection: close`: the client (or load
    balancer) opens its next request elsewhere instead of reusing a connection that the
    listener's closing would break."""

    def __init__(self, app: ASGIApp, drain: Drain) -> None:
        self.app = app
        self.drain = drain

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        drain = self.drain

        async def send_closing(message: Message) -> None:
            if message["type"] == "http.response.start" and drain.draining:
                headers = [(k, v) for k, v in message.get("headers", []) if k != b"connection"]
                message = {**message, "headers": [*headers, (b"connection", b"close")]}
            await send(message)

        await self.app(scope, receive, send_closing)
