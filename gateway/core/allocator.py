"""The memory allocator of the serving processes (`GATEWAY_ALLOCATOR`).

Opening and closing WebSockets grows glibc malloc's heap by about 17-20 KB per connection with
no plateau: the freed memory stays in the allocator's arenas (live Python objects do not grow;
`malloc_trim(0)` gives most of it back). `docs/reliability.md` has the measurements of the
options (`python -m bench.ws_churn`). What `gateway serve` and `gateway demo` do:

- `auto` (default): jemalloc when Debian's `libjemalloc2` is installed (`LD_PRELOAD`, with
  `MALLOC_CONF` returning freed pages within a second), else glibc with `MALLOC_ARENA_MAX=2`
  and a `malloc_trim(0)` every 10 s.
- `jemalloc`: jemalloc, or fail at start-up when the library is missing.
- `system`: whatever the environment sets (nothing changed, no trimming unless
  `GATEWAY_MALLOC_TRIM_INTERVAL_S` asks).

jemalloc has to be loaded before the interpreter starts (`LD_PRELOAD`): the command sets it and
re-executes itself once; uvicorn's worker processes inherit the environment.
"""

from __future__ import annotations

import asyncio
import ctypes
import ctypes.util
import logging
import os
import sys
from pathlib import Path

from gateway.core.background import BackgroundTasks
from gateway.core.config import Settings

logger = logging.getLogger("gateway.allocator")

JEMALLOC_PATHS = (
    "/usr/lib/x86_64-linux-gnu/libjemalloc.so.2",
    "/usr/lib/aarch64-linux-gnu/libjemalloc.so.2",
    "/usr/lib/libjemalloc.so.2",
    "/usr/local/lib/libjemalloc.so.2",
)
REEXEC_MARK = "GATEWAY_ALLOCATOR_APPLIED"
"""Set in the environment of the re-executed command, so that it applies the choice once."""
GLIBC_ARENAS = "2"
JEMALLOC_CONF = "background_thread:true,dirty_decay_ms:1000,muzzy_decay_ms:0"
"""Freed pages go back to the system within about a second, from jemalloc's own thread
(its default keeps them 10 s, which a burst of sockets turns into a high-water mark)."""
DEFAULT_TRIM_S = 10.0


def jemalloc_path() -> str | None:
    """The installed jemalloc shared library, if any."""
    for path in JEMALLOC_PATHS:
        if Path(path).exists():
            return path
    return None


def uses_jemalloc() -> bool:
    """True when this process runs with jemalloc preloaded."""
    return "jemalloc" in os.environ.get("LD_PRELOAD", "")


def allocator_environment(settings: Settings) -> dict[str, str]:
    """The environment variables the serving processes need for `settings.allocator`."""
    if settings.allocator == "system" or uses_jemalloc():
        return {}
    path = jemalloc_path()
    if path is None:
        if settings.allocator == "jemalloc":
            raise RuntimeError("GATEWAY_ALLOCATOR=jemalloc but libjemalloc2 is not installed")
        return {} if "MALLOC_ARENA_MAX" in os.environ else {"MALLOC_ARENA_MAX": GLIBC_ARENAS}
    preload = " ".join(p for p in (os.environ.get("LD_PRELOAD", ""), path) if p)
    return {"LD_PRELOAD": preload, "MALLOC_CONF": os.environ.get("MALLOC_CONF", JEMALLOC_CONF)}


def apply_allocator(settings: Settings) -> None:
    """Re-execute this command under the allocator `settings` ask for (once; no-op when the
    environment already has it)."""
    if os.environ.get(REEXEC_MARK):
        return
    extra = allocator_environment(settings)
    if not extra:
        return
    env = {**os.environ, **extra, REEXEC_MARK: "1"}
    logger.info("allocator: re-executing with %s", ", ".join(f"{k}={v}" for k, v in extra.items()))
    sys.stdout.flush()
    sys.stderr.flush()
    os.execve(sys.executable, [sys.executable, *sys.argv], env)  # noqa: S606 (our own argv)


def trim_interval(settings: Settings) -> float:
    """Seconds between two `malloc_trim(0)` (0: never). Under jemalloc: never."""
    if uses_jemalloc():
        return 0.0
    if settings.malloc_trim_interval_s is not None:
        return settings.malloc_trim_interval_s
    return DEFAULT_TRIM_S if settings.allocator == "auto" else 0.0


def _malloc_trim() -> None:
    name = ctypes.util.find_library("c")
    if name is None:
        return
    libc = ctypes.CDLL(name)
    trim = getattr(libc, "malloc_trim", None)
    if trim is not None:
        trim(0)


def start_trimming(tasks: BackgroundTasks, settings: Settings) -> None:
    """Give glibc's free memory back to the system every `trim_interval` seconds, off the
    event loop (a trim of a large heap takes milliseconds)."""
    interval = trim_interval(settings)
    if interval <= 0 or not sys.platform.startswith("linux"):
        return

    async def trim() -> None:
        await asyncio.to_thread(_malloc_trim)

    tasks.every(interval, trim)
