"""WebSocket churn: RSS of a real `gateway serve` worker while sockets open and close.

    .venv/bin/python -m bench.ws_churn [--sockets 5000] [--modes default,arena2,jemalloc,trim]

Each mode starts its own gateway (SQLite, mock upstream) with the allocator setting of that
mode, opens and closes `--sockets` authenticated sockets (20 at a time) and prints the
worker's RSS every 500 sockets. Modes: `default` (glibc, as shipped before), `arena2`
(`MALLOC_ARENA_MAX=2`), `jemalloc` (`LD_PRELOAD` of Debian's libjemalloc2), `trim` (glibc
and `GATEWAY_MALLOC_TRIM_INTERVAL_S=1`), `shipped` (what `gateway serve` sets by itself).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import websockets

ADMIN_TOKEN = secrets.token_hex(16)
JEMALLOC = "/usr/lib/x86_64-linux-gnu/libjemalloc.so.2"
MODES: dict[str, dict[str, str]] = {
    "default": {"GATEWAY_ALLOCATOR": "system"},
    "arena2": {"GATEWAY_ALLOCATOR": "system", "MALLOC_ARENA_MAX": "2"},
    "jemalloc": {"GATEWAY_ALLOCATOR": "system", "LD_PRELOAD": JEMALLOC},
    "jemalloc-decay": {
        "GATEWAY_ALLOCATOR": "system",
        "LD_PRELOAD": JEMALLOC,
        "MALLOC_CONF": "background_thread:true,dirty_decay_ms:1000,muzzy_decay_ms:0",
    },
    "trim": {"GATEWAY_ALLOCATOR": "system", "GATEWAY_MALLOC_TRIM_INTERVAL_S": "1"},
    "shipped": {},
}


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError("no VmRSS")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def start(mode: str, tmp: Path) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("GATEWAY_", "OPENAI_"))}
    env.update(
        GATEWAY_ENV="development",
        GATEWAY_DATABASE_URL=f"sqlite+aiosqlite:///{tmp / (mode + '.db')}",
        GATEWAY_ADMIN_TOKEN=ADMIN_TOKEN,
        GATEWAY_SECRET_KEY=secrets.token_hex(32),
        GATEWAY_METRICS_DIR=str(tmp / ("metrics-" + mode)),
        **MODES[mode],
    )
    gateway = str(Path(sys.executable).parent / "gateway")
    subprocess.run([gateway, "db", "upgrade"], env=env, check=True, capture_output=True)
    log = (tmp / f"{mode}.log").open("wb")
    proc = subprocess.Popen(
        [gateway, "serve", "--port", str(port), "--mock-port", str(free_port())],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            if httpx.get(base + "/readyz", timeout=1).status_code == 200:
                return proc, base
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    proc.kill()
    raise RuntimeError(f"gateway ({mode}) did not start: {(tmp / f'{mode}.log').read_text()}")


def seed(base: str) -> str:
    admin = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
    with httpx.Client(base_url=base, headers=admin, timeout=30) as c:
        tenant = c.post("/admin/tenants", json={"slug": "churn", "name": "churn"}).json()["id"]
        key = c.post(f"/admin/tenants/{tenant}/keys", json={"name": "k"}).json()["key"]
        spec = {"instructions": "Be brief.", "model": "mock-model"}
        c.put(f"/admin/tenants/{tenant}/agents/assistant", json=spec).raise_for_status()
    return str(key)


async def churn(base: str, key: str, sockets: int, concurrency: int = 20) -> None:
    url = base.replace("http://", "ws://") + "/v1/agents/assistant/ws"
    headers = {"Authorization": f"Bearer {key}"}
    left = sockets

    async def worker() -> None:
        nonlocal left
        while left > 0:
            left -= 1
            async with websockets.connect(url, additional_headers=headers):
                pass

    await asyncio.gather(*(worker() for _ in range(concurrency)))


def measure(mode: str, sockets: int, step: int = 500) -> list[int]:
    tmp = Path(tempfile.mkdtemp(prefix="ws-churn-"))
    proc, base = start(mode, tmp)
    try:
        key = seed(base)
        asyncio.run(churn(base, key, 200))  # warm-up
        time.sleep(1.5)
        samples = [rss_kib(proc.pid)]
        for _ in range(sockets // step):
            asyncio.run(churn(base, key, step))
            time.sleep(1.5)  # a trim interval, and the closes settle
            samples.append(rss_kib(proc.pid))
        return samples
    finally:
        proc.terminate()
        proc.wait(timeout=20)
        shutil.rmtree(tmp, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--sockets", type=int, default=5000)
    parser.add_argument("--modes", default=",".join(MODES))
    args = parser.parse_args()
    for mode in args.modes.split(","):
        samples = measure(mode, args.sockets)
        growth = samples[-1] - samples[0]
        per = growth * 1024 / args.sockets
        print(
            f"{mode:<9} RSS {samples[0] / 1024:6.1f} -> {samples[-1] / 1024:6.1f} MiB "
            f"(+{growth / 1024:5.1f} MiB, {per:6.0f} B/socket); "
            f"every 500: {' '.join(str(s // 1024) for s in samples)}",
            flush=True,
        )


if __name__ == "__main__":
    main()
