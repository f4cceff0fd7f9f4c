"""The shipped nginx config (deploy/nginx/gateway.conf), pointed at replicas on loopback.

Only the `upstream` servers and the `listen` address change; every proxy setting is the
shipped one, so the tests exercise the config an operator deploys.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from email.message import Message
from pathlib import Path

import pytest

from tests.conftest import IN_CI

ROOT = Path(__file__).resolve().parents[2]
GATEWAY_CONF = ROOT / "deploy" / "nginx" / "gateway.conf"
NGINX = shutil.which("nginx") or "/usr/sbin/nginx"


def nginx_binary() -> str:
    """The nginx executable (a failure in CI, a skip elsewhere, when it is missing)."""
    if not Path(NGINX).exists():
        if IN_CI:
            pytest.fail("nginx is not installed (.ci/run installs Debian's package)")
        pytest.skip("nginx is not installed")
    return NGINX


def render(prefix: Path, listen_port: int, upstream_ports: list[int]) -> Path:
    """A complete nginx.conf under `prefix` serving the shipped config on 127.0.0.1."""
    site = GATEWAY_CONF.read_text()
    servers = "".join(
        f"    server 127.0.0.1:{port} max_fails=1 fail_timeout=5s;\n" for port in upstream_ports
    )
    site, count = re.subn(
        r"(?m)^    server gateway-\d+:8000[^\n]*\n(?:    server [^\n]*\n)*", servers, site
    )
    assert count == 1, "the upstream block's server lines moved"
    site, count = re.subn(r"(?m)^    listen 80;$", f"    listen 127.0.0.1:{listen_port};", site)
    assert count == 1, "the listen line moved"
    prefix.mkdir(parents=True, exist_ok=True)
    (prefix / "gateway.conf").write_text(site)
    user = "user root;\n" if os.geteuid() == 0 else ""
    main = (
        f"{user}worker_processes 1;\n"
        f"pid {prefix}/nginx.pid;\n"
        f"error_log {prefix}/error.log warn;\n"
        "daemon off;\n"
        "events { worker_connections 1024; }\n"
        "http {\n"
        f"    access_log {prefix}/access.log;\n"
        f"    client_body_temp_path {prefix}/body;\n"
        f"    proxy_temp_path {prefix}/proxy;\n"
        f"    fastcgi_temp_path {prefix}/fastcgi;\n"
        f"    uwsgi_temp_path {prefix}/uwsgi;\n"
        f"    scgi_temp_path {prefix}/scgi;\n"
        f"    include {prefix}/gateway.conf;\n"
        "}\n"
    )
    path = prefix / "nginx.conf"
    path.write_text(main)
    return path


def check(conf: Path) -> subprocess.CompletedProcess[str]:
    """`nginx -t` of a rendered config."""
    return subprocess.run(
        [nginx_binary(), "-t", "-p", str(conf.parent), "-c", str(conf)],
        capture_output=True,
        text=True,
        check=False,
    )


@contextmanager
def serving(conf: Path) -> Iterator[None]:
    """nginx running a rendered config, stopped on leaving."""
    proc = subprocess.Popen(
        [nginx_binary(), "-p", str(conf.parent), "-c", str(conf)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        yield
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def answer_once_up(
    request: urllib.request.Request, wait_s: float = 10
) -> tuple[int, Message, bytes]:
    """(status, headers, body) of the first answer nginx gives `request`, whatever its status,
    retrying while it does not listen yet."""
    deadline = time.monotonic() + wait_s
    while True:
        try:
            with urllib.request.urlopen(request, timeout=5) as response:  # noqa: S310
                return response.status, response.headers, response.read()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.headers, exc.read()
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)
