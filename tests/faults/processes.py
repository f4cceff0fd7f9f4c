"""Real gateway processes for the fault suite: `gateway serve`, stopped with real signals."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

from tests.conftest import gateway_env, wait_answering
from tests.limits.conftest import free_port


class GatewayProcess:
    """`gateway serve` on a free port with the test environment plus `env`."""

    def __init__(self, database_url: str, log: Path, **env: str) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = log
        gateway_bin = Path(sys.executable).parent / "gateway"
        with log.open("ab") as out:
            self.proc = subprocess.Popen(
                [str(gateway_bin), "serve", "--port", str(self.port)],
                env=gateway_env(database_url, **env),
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        wait_answering(f"{self.url}/healthz", self.proc, log)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self, sig: signal.Signals = signal.SIGTERM, timeout_s: float = 30) -> float:
        """Send `sig` and wait for the exit; returns the seconds it took."""
        started = time.monotonic()
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            self.proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            message = f"no exit {timeout_s} s after {sig.name}: {self.log()[-3000:]}"
            raise AssertionError(message) from None
        return time.monotonic() - started
