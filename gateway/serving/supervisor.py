"""`gateway serve --workers N`: N worker processes on one listening socket, supervised.

uvicorn's own supervisor builds its plain `Server` in each worker; this one runs
`GatewayServer` (the drain) instead, and keeps the rest small: the parent binds the socket,
spawns the workers, restarts one that dies while serving, and on SIGTERM / SIGINT passes the
signal on to every worker at once (each drains on its own), closes its own copy of the
listening socket (the workers' copies keep it open until they stop accepting: then new
connections are refused) and waits for them. It exits 0 when every worker did.
"""

from __future__ import annotations

import contextlib
import logging
import multiprocessing
import os
import signal
import socket
import threading
from multiprocessing.context import SpawnProcess
from types import FrameType

from gateway.serving.server import GatewayConfig, GatewayServer
from observability.exposition import forget_worker

logger = logging.getLogger("gateway.serving")
multiprocessing.allow_connection_pickling()
_spawn = multiprocessing.get_context("spawn")
CHECK_S = 0.5


def _worker(config: GatewayConfig, sockets: list[socket.socket]) -> None:
    """A worker process: logging, then the server on the inherited socket."""
    config.configure_logging()
    GatewayServer(config).run(sockets=sockets)


class Supervisor:
    """The parent process of the workers."""

    def __init__(self, config: GatewayConfig, workers: int) -> None:
        self.config = config
        self.workers = workers
        self.processes: list[SpawnProcess] = []
        self.stopping = threading.Event()
        self.signals: list[int] = []

    def run(self) -> int:
        """Serve until a signal; the exit status (0 when every worker drained cleanly)."""
        sock = self.config.bind_socket()
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, self._on_signal)
        logger.info("supervisor [%d]: starting %d workers", os.getpid(), self.workers)
        self.processes = [self._start(sock) for _ in range(self.workers)]
        while not self.stopping.wait(CHECK_S):
            self._restart_dead(sock)
        # The workers hold the listening socket open while they drain and close it when they
        # stop accepting; this process's copy must not keep it listening after that (the
        # kernel would accept connections into a queue no worker reads, lost at exit).
        sock.close()
        codes = []
        for process in self.processes:
            process.join()
            codes.append(process.exitcode)
            if process.pid is not None:
                forget_worker(process.pid)  # a no-op for one that marked itself dead
        logger.info("supervisor [%d]: workers exited with %s", os.getpid(), codes)
        return 0 if all(code == 0 for code in codes) else 1

    def _start(self, sock: socket.socket) -> SpawnProcess:
        process = _spawn.Process(target=_worker, args=(self.config, [sock]))
        process.start()
        return process

    def _restart_dead(self, sock: socket.socket) -> None:
        for index, process in enumerate(self.processes):
            if process.is_alive() or self.stopping.is_set():
                continue
            logger.warning("worker [%s] exited with %s: restarting", process.pid, process.exitcode)
            if process.pid is not None:
                forget_worker(process.pid)
            self.processes[index] = self._start(sock)

    def _on_signal(self, sig: int, frame: FrameType | None) -> None:
        self.stopping.set()
        for process in self.processes:
            if process.pid is not None and process.exitcode is None:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(process.pid, sig)
