"""(e) and (e'): the LiteLLM proxy as a comparison point (`python -m bench.run --litellm`).

LiteLLM is installed once into a virtual environment of its own under the bench's persistent,
gitignored scratch directory (`bench/.scratch/litellm-<version>/`), never into the project's
`.venv`. The proxy gets a config with a master key and one model, `mock-gpt`, routed to the
mock LLM (`openai/gpt-4.1-mini` at the mock's `/v1`), no database, no callbacks, telemetry
off, the bundled model cost map (no fetch at start-up) and `LITELLM_LOG=ERROR`. It runs as
`litellm --config … --num_workers 1` on core 0 like the gateway of (d) (the mock and the load
on core 1); its CPU is that of its whole process tree. It is measured on the same request as
(d), `model` = `mock-gpt`, plain (e) and streamed (e'), at each connection count <= 32.

Any failure (install, start, a first answer that is not a complete 200, the load itself) is
printed and ends only this point: the run goes on without it.

    python -m bench.litellm --install     # install (or check) the venv and print its path
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.fullstack import FINISHED, STREAMED
from bench.loadgen import Expect
from bench.payloads import chat_body
from bench.procs import LOOPBACK, PROXY_VARS, Child, free_port
from bench.report import LITELLM, LITELLM_SSE, Point
from bench.rig import UNDER_TEST, Bench, base_env

VERSION = "1.108.7"
SCRATCH = Path(__file__).parent / ".scratch"
MODEL_ALIAS = "mock-gpt"
INSTALL_TIMEOUT_S = 900.0
READY_TIMEOUT_S = 120.0
"""LiteLLM imports a lot on start-up: a pinned single core takes tens of seconds."""


def venv_dir() -> Path:
    return SCRATCH / f"litellm-{VERSION}"


def _installed_marker(venv: Path) -> Path:
    return venv / ".bench-installed"


def install(log: Path | None = None) -> Path:
    """The `litellm` executable of our own venv, installing `litellm[proxy]` first if needed.

    Raises RuntimeError (with pip's output tail) when the install fails.
    """
    venv = venv_dir()
    binary = venv / "bin" / "litellm"
    marker = _installed_marker(venv)
    if marker.exists() and binary.exists():
        return binary
    SCRATCH.mkdir(parents=True, exist_ok=True)
    print(f"  installing litellm[proxy]=={VERSION} into {venv} (once)", flush=True)
    python = venv / "bin" / "python"
    steps = [
        [sys.executable, "-m", "venv", "--clear", str(venv)],
        [str(python), "-m", "pip", "install", "--quiet", "--upgrade", "pip"],
        [str(python), "-m", "pip", "install", "--quiet", f"litellm[proxy]=={VERSION}"],
    ]
    env = {k: v for k, v in os.environ.items() if not k.startswith("PIP_TARGET")}
    env.pop("VIRTUAL_ENV", None)
    for command in steps:
        done = subprocess.run(
            command, env=env, capture_output=True, text=True, timeout=INSTALL_TIMEOUT_S
        )
        output = (done.stdout + done.stderr)[-3000:]
        if log is not None:
            with log.open("a") as f:
                f.write(f"$ {' '.join(command)}\n{output}\n")
        if done.returncode != 0:
            raise RuntimeError(f"{' '.join(command[:4])}… failed ({done.returncode}):\n{output}")
    if not binary.exists():
        raise RuntimeError(f"litellm installed but {binary} is missing")
    marker.write_text(VERSION + "\n")
    return binary


@dataclass
class ProxyConfig:
    """What the proxy is started with."""

    path: Path
    master_key: str
    env: dict[str, str]


def write_config(directory: Path, mock_port: int, base_env: dict[str, str]) -> ProxyConfig:
    """A proxy config (JSON is YAML) routing `mock-gpt` to the mock, and a quiet environment."""
    master_key = "sk-bench-" + secrets.token_hex(16)
    config = {
        "model_list": [
            {
                "model_name": MODEL_ALIAS,
                "litellm_params": {
                    "model": "openai/gpt-4.1-mini",
                    "api_base": f"http://127.0.0.1:{mock_port}/v1",
                    "api_key": "bench",
                },
            }
        ],
        "litellm_settings": {
            "telemetry": False,
            "set_verbose": False,
            "json_logs": False,
            "callbacks": [],
            "success_callback": [],
            "failure_callback": [],
            "turn_off_message_logging": True,
            "disable_hf_tokenizer_download": True,
        },
        "general_settings": {
            "master_key": master_key,
            "disable_spend_logs": True,
            "disable_adding_master_key_hash_to_db": True,
        },
    }
    path = directory / "litellm-config.yaml"
    path.write_text(json.dumps(config, indent=2))
    env = {k: v for k, v in base_env.items() if k.lower() not in PROXY_VARS}
    for name in list(env):
        if name.startswith(("LITELLM_", "DATABASE_", "REDIS_", "OPENAI_", "LANGFUSE_")):
            del env[name]
    env |= {
        "LITELLM_LOG": "ERROR",
        "LITELLM_MODE": "PRODUCTION",  # no .env loading
        "LITELLM_LOCAL_MODEL_COST_MAP": "True",  # the bundled cost map: no fetch at start-up
        "LITELLM_TELEMETRY": "False",
        "LITELLM_LOCAL_BLOG_POSTS": "True",
        "TELEMETRY": "False",
        "DISABLE_SCHEMA_UPDATE": "True",
        "NO_DOCS": "True",
        "NO_REDOC": "True",
        "HOME": str(directory),  # anything it caches stays in the run's temporary directory
    }
    return ProxyConfig(path, master_key, env)


def command(binary: Path, config: ProxyConfig, port: int) -> list[str]:
    return [
        str(binary),
        "--config",
        str(config.path),
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--num_workers",
        "1",
    ]


def check_answer(url: str, key: str, body: bytes, expect: Expect) -> None:
    """One request; raise unless it is a 200 whose body `expect` accepts."""
    request = urllib.request.Request(url, data=body, method="POST")  # noqa: S310 (loopback)
    request.add_header("Authorization", f"Bearer {key}")
    request.add_header("Content-Type", "application/json")
    try:
        with LOOPBACK.open(request, timeout=60) as resp:
            data = resp.read()
    except urllib.error.HTTPError as exc:
        raise RuntimeError(f"LiteLLM answered {exc.code}: {exc.read()[:500]!r}") from exc
    if not expect.matches(data):
        raise RuntimeError(f"LiteLLM's answer is not complete: {data[-500:]!r}")


def start_proxy(bench: Bench, mock_port: int) -> tuple[Child, str, str, dict[str, Any]]:
    """Install (once), configure and start the proxy on core 0; wait for it (bounded)."""
    binary = install(log=bench.tmp / "litellm-install.log")
    config = write_config(bench.tmp, mock_port, base_env())
    port = free_port()
    started = time.monotonic()
    child = bench.start("litellm", command(binary, config, port), config.env, UNDER_TEST)
    base = f"http://127.0.0.1:{port}"
    child.wait_http(f"{base}/health/liveliness", timeout_s=READY_TIMEOUT_S)
    info = {
        "version": VERSION,
        "venv": str(venv_dir()),
        "ready_s": time.monotonic() - started,
        "model": MODEL_ALIAS,
    }
    return child, base, config.master_key, info


def run_litellm_points(bench: Bench, mock_port: int) -> tuple[list[Point], dict[str, Any]]:
    """(e) plain and (e') streamed at each connection count <= 32; never raises (but on
    KeyboardInterrupt): a failure is returned as `info["error"]` with the points so far."""
    print(f"(e) LiteLLM proxy {VERSION}", flush=True)
    points: list[Point] = []
    info: dict[str, Any] = {"version": VERSION}
    child: Child | None = None
    try:
        child, base, key, info = start_proxy(bench, mock_port)
        print(f"  ready after {info['ready_s']:.1f} s", flush=True)
        url, headers = f"{base}/v1/chat/completions", {"Authorization": f"Bearer {key}"}
        plain = json.dumps(chat_body(MODEL_ALIAS)).encode()
        streamed = json.dumps(chat_body(MODEL_ALIAS, stream=True)).encode()
        check_answer(url, key, plain, FINISHED)
        check_answer(url, key, streamed, STREAMED)
        conns = bench.compare_connections
        for c in conns:
            points.append(
                bench.point(LITELLM, child.pid, url, plain, headers, c, FINISHED, tree=True)
            )
        for c in conns:
            points.append(
                bench.point(
                    LITELLM_SSE,
                    child.pid,
                    url,
                    streamed,
                    headers,
                    c,
                    STREAMED,
                    tree=True,
                    ttfb=c == 1,
                )
            )
    except Exception as exc:  # this point only: the run goes on without it
        info["error"] = f"{type(exc).__name__}: {exc}"
        print(f"  LiteLLM point failed, continuing without it: {info['error']}", flush=True)
        if child is not None:
            print(f"--- litellm log tail ---\n{child.tail()}", flush=True)
    finally:
        if child is not None:
            bench.forget(child)
    return points, info


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.litellm", description=__doc__)
    parser.add_argument("--install", action="store_true", help="install into the scratch venv")
    args = parser.parse_args(argv)
    if args.install:
        print(install())


if __name__ == "__main__":
    main()
