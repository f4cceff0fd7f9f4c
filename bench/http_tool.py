"""CPU the gateway spends per HTTP tool call, beyond the receiver's own time.

`python -m bench.http_tool [--calls N]`: a receiver (aiohttp, answers `{"ok": true}`) runs in a
separate process; this process makes N sequential tool calls through the gateway's own code
path (`HttpTools.call`: argument validation against the JSON Schema, the egress check, the
signing secret from its cache, the HMAC signature, the pooled guarded aiohttp session, the
capped read) and reports this process's CPU time per call (`time.process_time`), which
excludes the receiver. The secret is loaded from a real SQLite database once (then cached, as
in a run). Prints one JSON line.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

RECEIVER = """
import sys
from aiohttp import web
async def handle(request):
    await request.read()
    return web.json_response({"ok": True, "order": "A-17"})
app = web.Application()
app.router.add_post("/hook", handle)
web.run_app(app, host="127.0.0.1", port=int(sys.argv[1]), print=None, access_log=None)
"""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def measure(url: str, calls: int, db_url: str) -> dict[str, Any]:
    from agents import RunContextWrapper
    from agents.tool_context import ToolContext

    from gateway.core.config import Settings
    from gateway.core.db import Database
    from gateway.core.migrate import upgrade
    from gateway.tools.context import run_context
    from gateway.tools.http import HttpTools
    from gateway.tools.secrets import ToolSecretCache
    from tenants.agent.tool_specs import HttpToolSpec
    from tenants.tenant.schemas import TenantCreate
    from tenants.tenant.service import create_tenant
    from tenants.tool_secret.service import rotate

    await asyncio.to_thread(upgrade, db_url)
    settings = Settings(_env_file=None, database_url=db_url, egress_allow="127.0.0.0/8")
    db = Database(db_url)
    async with db.unit() as session:
        tenant = await create_tenant(session, TenantCreate(slug="bench", name="bench"))
        await rotate(session, settings.secret_key, tenant.id)
    secrets = ToolSecretCache(db, settings.secret_key, ttl_s=5.0, max_size=100)
    tools = HttpTools(settings, secrets)
    spec = HttpToolSpec(
        type="http",
        name="lookup_order",
        url=url,
        parameters={
            "type": "object",
            "properties": {"order_id": {"type": "string"}},
            "required": ["order_id"],
        },
    )
    tool = tools.build(spec)
    context = run_context("run_bench", "assistant", tenant.id, None)
    wrapper = ToolContext(
        context=context, tool_name="lookup_order", tool_call_id="call_1", tool_arguments="{}"
    )
    assert isinstance(wrapper, RunContextWrapper)
    arguments = '{"order_id": "A-17"}'
    for _ in range(200):  # warm-up: connection pool, secret cache, code paths
        out = await tool.on_invoke_tool(wrapper, arguments)
    assert '"ok"' in str(out), out
    cpu, wall = time.process_time(), time.perf_counter()
    for _ in range(calls):
        await tool.on_invoke_tool(wrapper, arguments)
    cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
    await tools.close()
    await db.dispose()
    return {
        "point": "http_tool_call",
        "calls": calls,
        "gateway_cpu_ms_per_call": round(cpu / calls * 1000, 3),
        "wall_ms_per_call": round(wall / calls * 1000, 3),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--calls", type=int, default=3000)
    args = parser.parse_args()
    port = free_port()
    receiver = subprocess.Popen([sys.executable, "-c", RECEIVER, str(port)])
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise SystemExit("the receiver did not start") from None
                time.sleep(0.05)
        with tempfile.TemporaryDirectory() as tmp:
            db_url = f"sqlite+aiosqlite:///{Path(tmp) / 'bench.db'}"
            result = asyncio.run(measure(f"http://127.0.0.1:{port}/hook", args.calls, db_url))
        print(json.dumps(result))
    finally:
        receiver.terminate()
        receiver.wait(timeout=10)


if __name__ == "__main__":
    main()
