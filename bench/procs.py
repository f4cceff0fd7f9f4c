"""Child processes of the benchmark: free ports, CPU pinning, readiness, CPU time, cleanup."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
import urllib.request
from pathlib import Path
from typing import IO

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
# Loopback only: never route our HTTP calls through a proxy from the environment.
LOOPBACK = urllib.request.build_opener(urllib.request.ProxyHandler({}))
PROXY_VARS = ("http_proxy", "https_proxy", "all_proxy", "no_proxy")


def free_port() -> int:
    """A free TCP port on 127.0.0.1 (bound, read, released)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def can_pin() -> bool:
    """Both core 0 and core 1 are usable by this process."""
    return {0, 1} <= os.sched_getaffinity(0)


def pinned(command: list[str], cpu: int | None) -> list[str]:
    """`command` under `taskset -c cpu` (taskset execs, so the pid is the command's own)."""
    return command if cpu is None else ["taskset", "-c", str(cpu), *command]


def _stat_fields(pid: int) -> list[str]:
    """/proc/<pid>/stat after "pid (comm) ": [0] is state (field 3), [1] ppid (field 4)."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    return stat[stat.rindex(")") + 2 :].split()


def cpu_seconds(pid: int) -> float:
    """utime + stime of a process (all its threads), from /proc/<pid>/stat."""
    fields = _stat_fields(pid)
    # utime/stime are fields 14/15.
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def process_tree(pid: int) -> list[int]:
    """`pid` and all its live descendants (walks every /proc/<n>/stat once)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            ppid = int(_stat_fields(int(entry.name))[1])
        except (OSError, ValueError, IndexError):
            continue  # exited meanwhile
        children.setdefault(ppid, []).append(int(entry.name))
    tree, todo = [], [pid]
    while todo:
        current = todo.pop()
        tree.append(current)
        todo.extend(children.get(current, ()))
    return tree


def tree_cpu_seconds(pid: int) -> float:
    """CPU time of a process tree: utime + stime + cutime + cstime of each live member (the
    c-times hold the descendants that already exited and were reaped)."""
    total = 0
    for member in process_tree(pid):
        try:
            fields = _stat_fields(member)
        except OSError:
            continue
        total += sum(int(v) for v in fields[11:15])
    return total / CLOCK_TICKS


class Child:
    """A started child process with its log file; `stop()` is idempotent."""

    def __init__(
        self, name: str, command: list[str], *, env: dict[str, str], log_path: Path, cpu: int | None
    ) -> None:
        self.name = name
        self.log_path = log_path
        self._log: IO[bytes] = log_path.open("wb")
        self.proc = subprocess.Popen(
            pinned(command, cpu),
            env=env,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    @property
    def pid(self) -> int:
        return self.proc.pid

    def wait_http(self, url: str, timeout_s: float = 30.0) -> None:
        """Poll `url` until it answers 200; fail early if the process exits."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.name} exited ({self.proc.returncode}):\n{self.tail()}")
            try:
                with LOOPBACK.open(url, timeout=1) as resp:
                    if resp.status == 200:
                        return
            except OSError:
                pass
            time.sleep(0.1)
        raise RuntimeError(f"{self.name} not ready after {timeout_s}s:\n{self.tail()}")

    def tail(self, lines: int = 30) -> str:
        self._log.flush()
        text = self.log_path.read_text(errors="replace").splitlines()
        return "\n".join(text[-lines:])

    def stop(self, timeout_s: float = 10.0) -> None:
        """SIGINT (graceful: flushes usage), then SIGKILL of its process group if needed."""
        if self.proc.poll() is None:
            try:
                self.proc.send_signal(signal.SIGINT)
                self.proc.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=5)
        self._log.close()


def core_busy_seconds(cpu: int) -> float:
    """Busy time (everything but idle and iowait) of one core since boot, from /proc/stat."""
    for line in Path("/proc/stat").read_text().splitlines():
        if line.startswith(f"cpu{cpu} "):
            values = [int(v) for v in line.split()[1:]]
            return (sum(values[:8]) - values[3] - values[4]) / CLOCK_TICKS
    raise ValueError(f"no cpu{cpu} in /proc/stat")


class CpuWindow:
    """CPU time of one process (with `tree`: of it and all its descendants) and of its core
    over a measured window."""

    def __init__(self, pid: int, core: int | None, *, tree: bool = False) -> None:
        self.pid, self.core = pid, core
        self._cpu = tree_cpu_seconds if tree else cpu_seconds
        self._proc = self._cpu(pid)
        self._core = core_busy_seconds(core) if core is not None else 0.0
        self._wall = time.monotonic()

    def close(self) -> dict[str, float | None]:
        """`cpu_s` of the process; `core_other_pct`: share of the window the core spent on
        anything else (other processes, interrupts): a noise indicator."""
        cpu_s = self._cpu(self.pid) - self._proc
        wall = time.monotonic() - self._wall
        other: float | None = None
        if self.core is not None and wall > 0:
            busy = core_busy_seconds(self.core) - self._core
            other = max(0.0, busy - cpu_s) / wall * 100
        return {"cpu_s": cpu_s, "wall_s": wall, "core_other_pct": other}
