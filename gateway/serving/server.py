"""The uvicorn server of one gateway process, with the drain of `gateway.core.drain`.

uvicorn's own shutdown closes WebSockets at once (1012) and gives in-flight requests one fixed
timeout; the gateway needs its drain instead: on SIGTERM `/readyz` fails at once, the listener
closes only after `GATEWAY_DRAIN_DELAY_S`, in-flight runs, streams and WebSocket turns get up to
`GATEWAY_SHUTDOWN_GRACE_S`, and what is still open then ends through the app (`run.failed`
`shutting_down`, WebSocket close 1012) before the lifespan shutdown flushes usage and releases
leases. The process then exits 0: SIGTERM is how orchestrators stop a healthy replica.
A second SIGTERM or SIGINT ends the grace at once.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import socket
import time
from types import FrameType
from typing import Any

import uvicorn

from gateway.core.drain import Drain

logger = logging.getLogger("gateway.serving")
FINAL_S = 5.0
"""After the deadline: how long the app gets to send the last events and close its sockets
before the remaining connections are cut."""
POLL_S = 0.05


class GatewayConfig(uvicorn.Config):
    """A uvicorn config whose app is built by `gateway.app.create_app` in the serving process
    (each worker builds its own), keeping a reference to it for the drain."""

    def load_app(self) -> Any:
        def build() -> Any:
            from gateway.app import create_app

            app = create_app()
            self.gateway_drain: Drain = app.state.drain
            return app

        return build


class GatewayServer(uvicorn.Server):
    """uvicorn's server with the gateway's signal handling and shutdown sequence."""

    config: GatewayConfig

    @property
    def drain(self) -> Drain | None:
        return getattr(self.config, "gateway_drain", None)

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        drain = self.drain
        if drain is None or not self.started:
            self.should_exit = True  # not serving yet: plain exit
            return
        # Interactive Ctrl+C has no load balancer to wait for; the grace still applies.
        drain.begin(skip_delay=sig == signal.SIGINT)
        if not self.should_exit:
            logger.info(
                "draining: /readyz answers 503; new connections refused in %.1f s",
                max(0.0, drain.stop_at - time.monotonic()),
            )

    async def on_tick(self, counter: int) -> bool:
        drain = self.drain
        if drain is not None and drain.draining and time.monotonic() >= drain.stop_at:
            return True
        return await super().on_tick(counter)

    async def shutdown(self, sockets: list[Any] | None = None) -> None:
        drain = self.drain
        if drain is None:
            await super().shutdown(sockets)
            return
        if not drain.draining:
            drain.begin(skip_delay=True)  # e.g. limit_max_requests reached
        # HTTP connections that served a request and are idle close now, busy ones after their
        # response. One that has not read a request yet is left to get it: it may be a
        # balancer's request still in flight (closing it would lose it); every response now
        # closes its connection, and the deadline ends what is left.
        for connection in list(self.server_state.connections):
            if not _is_websocket(connection) and getattr(connection, "cycle", None) is not None:
                connection.shutdown()
        # Stop accepting. Closing a listener resets the connections still in its accept queue,
        # requests already written on them included (a balancer cannot replay such a POST), so
        # they are accepted and served first; only a connection arriving within the same
        # instant as the close can still be refused.
        pending = self._accept_pending()
        for server in self.servers:
            server.close()
        for sock in sockets or []:
            sock.close()
        loop = asyncio.get_running_loop()
        for conn in pending:
            await loop.connect_accepted_socket(self._protocol, conn)
        drain.stop()
        logger.info(
            "stopped accepting; %d connection(s) in flight get %.1f s",
            len(self.server_state.connections),
            max(0.0, drain.deadline - time.monotonic()),
        )
        await self._wait_connections(until=lambda: time.monotonic() >= drain.deadline)
        if self.server_state.connections:
            logger.warning(
                "grace over: ending %d connection(s) (shutting_down)",
                len(self.server_state.connections),
            )
            drain.expire()
            final = time.monotonic() + FINAL_S
            await self._wait_connections(until=lambda: time.monotonic() >= final)
        for connection in list(self.server_state.connections):
            connection.shutdown()  # what is still open now is cut (WebSockets: 1012)
        for task in self.server_state.tasks:
            task.cancel(msg="gateway shutdown")
        for server in self.servers:
            await server.wait_closed()
        if not self.force_exit:
            await self.lifespan.shutdown()

    def _accept_pending(self) -> list[socket.socket]:
        """The connections waiting in the listeners' accept queues, accepted now."""
        pending: list[socket.socket] = []
        for server in self.servers:
            for listening in server.sockets or ():
                listener = socket.socket(fileno=os.dup(listening.fileno()))
                try:
                    listener.setblocking(False)
                    while True:
                        try:
                            conn, _ = listener.accept()
                        except OSError:  # BlockingIOError: the queue is empty
                            break
                        conn.setblocking(False)
                        pending.append(conn)
                finally:
                    listener.close()  # the duplicate only: the server still holds its socket
        return pending

    def _protocol(self) -> asyncio.Protocol:
        """A connection's protocol, as uvicorn's server makes them."""
        config = self.config
        protocol: asyncio.Protocol = config.http_protocol_class(  # type: ignore[call-arg]
            config=config, server_state=self.server_state, app_state=self.lifespan.state
        )
        return protocol

    async def _wait_connections(self, until: Any) -> None:
        # uvicorn keeps no event for "last connection gone": poll, as its own shutdown does.
        while (  # noqa: ASYNC110
            self.server_state.connections or self.server_state.tasks
        ) and not until():
            await asyncio.sleep(POLL_S)


def _is_websocket(connection: Any) -> bool:
    # HTTP protocol objects of uvicorn have no `handshake_complete*` attributes.
    module: str = type(connection).__module__
    return module.startswith("uvicorn.protocols.websockets")
