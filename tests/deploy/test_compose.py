"""deploy/compose.yaml, as `docker-compose config` resolves it, and the nginx config it mounts.

No container engine runs here: the stack is checked as compose would run it (the resolved
config) and nginx checks the shipped config with `nginx -t`; the scale-out test runs that same
nginx config for real in front of gateway replicas.
"""

from __future__ import annotations

import http.server
import json
import os
import re
import shutil
import socket
import subprocess
import threading
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest
import yaml

from gateway.core.config import Settings
from tests.conftest import IN_CI, make_settings
from tests.deploy import nginx

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
SECRETS = {
    "GATEWAY_SECRET_KEY": "s" * 64,
    "GATEWAY_ADMIN_TOKEN": "a" * 48,
    "POSTGRES_PASSWORD": "p" * 32,
    "GRAFANA_ADMIN_PASSWORD": "g" * 24,
}


def compose_config(extra_env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    binary = shutil.which("docker-compose")
    if binary is None:
        if IN_CI:
            pytest.fail("docker-compose is not installed (.ci/run installs Debian's package)")
        pytest.skip("docker-compose is not installed")
    env = {k: v for k, v in os.environ.items() if k not in SECRETS and not k.startswith("OPENAI_")}
    env.update(extra_env)
    return subprocess.run(
        [binary, "-f", str(DEPLOY / "compose.yaml"), "config"],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
    )


@pytest.fixture(scope="module")
def stack() -> dict[str, Any]:
    result = compose_config(SECRETS)
    assert result.returncode == 0, result.stderr
    config: dict[str, Any] = yaml.safe_load(result.stdout)
    return config


def gateways(stack: dict[str, Any]) -> dict[str, Any]:
    return {
        name: svc for name, svc in stack["services"].items() if re.fullmatch(r"gateway-\d+", name)
    }


def check_secrets(service: dict[str, Any]) -> subprocess.CompletedProcess[str]:
    """The one-shot `check-secrets` service's command, run as its container would run it."""
    command = [part.replace("$$", "$") for part in service["entrypoint"] + service["command"]]
    env = {"PATH": os.environ["PATH"]}
    env.update({k: str(v) for k, v in service["environment"].items()})
    return subprocess.run(command, env=env, capture_output=True, text=True, check=False)


def test_config_resolves_without_the_secrets_and_up_stops_first_naming_them() -> None:
    result = compose_config({})
    assert result.returncode == 0, result.stderr  # `docker compose config` accepts the file
    config: dict[str, Any] = yaml.safe_load(result.stdout)
    services = config["services"]
    check = services["check-secrets"]
    refused = check_secrets(check)
    assert refused.returncode != 0
    assert "set POSTGRES_PASSWORD" in refused.stderr and "compose-env.sh" in refused.stderr
    # Every service that takes a secret starts only once the check succeeded.
    for name in ("postgres", "migrate", "mock-llm", "gateway-1", "gateway-2", "grafana"):
        condition = services[name]["depends_on"]["check-secrets"]["condition"]
        assert condition == "service_completed_successfully", name


def test_the_secrets_check_passes_with_the_generated_secrets(stack: dict[str, Any]) -> None:
    passed = check_secrets(stack["services"]["check-secrets"])
    assert passed.returncode == 0, passed.stderr
    partial = dict(stack["services"]["check-secrets"])
    partial["environment"] = {**partial["environment"], "GRAFANA_ADMIN_PASSWORD": ""}
    refused = check_secrets(partial)
    assert refused.returncode != 0 and "GRAFANA_ADMIN_PASSWORD" in refused.stderr


def test_postgres_and_redis_have_health_checks(stack: dict[str, Any]) -> None:
    for name in ("postgres", "redis"):
        assert stack["services"][name]["healthcheck"]["test"], name


def test_two_or_more_replicas_wait_for_the_migration_and_the_stores(
    stack: dict[str, Any],
) -> None:
    replicas = gateways(stack)
    assert len(replicas) >= 2
    migrate = stack["services"]["migrate"]
    assert migrate["command"] == ["db", "upgrade"]
    assert migrate["restart"] == "no"
    for name, svc in replicas.items():
        deps = svc["depends_on"]
        assert deps["migrate"]["condition"] == "service_completed_successfully", name
        assert deps["postgres"]["condition"] == "service_healthy", name
        assert deps["redis"]["condition"] == "service_healthy", name
        assert svc["image"] == migrate["image"], name
        env = svc["environment"]
        assert env["GATEWAY_ENV"] == "production"
        assert env["GATEWAY_DATABASE_URL"].startswith("postgresql+asyncpg://")
        assert env["GATEWAY_REDIS_URL"].startswith("redis://redis:")
        assert env["GATEWAY_SECRET_KEY"] == SECRETS["GATEWAY_SECRET_KEY"]
        # A stop lets the drain finish before compose kills the container.
        drain = float(env["GATEWAY_DRAIN_DELAY_S"]) + float(env["GATEWAY_SHUTDOWN_GRACE_S"])
        assert float(svc["stop_grace_period"].rstrip("s")) > drain, name
        assert svc["read_only"] is True and "/tmp" in svc["tmpfs"]
        # The usage spill (the image writes it under /var/lib/gateway) outlives the container.
        mounts = [  # docker-compose 1.x prints the short form, `source:target[:mode]`
            v
            if isinstance(v, dict)
            else dict(zip(("source", "target"), v.split(":")[:2], strict=True))
            for v in svc["volumes"]
        ]
        spill = [v for v in mounts if v["target"] == "/var/lib/gateway"]
        assert spill and spill[0]["source"] in stack["volumes"], svc["volumes"]
        assert "ports" not in svc, "replicas are reached through nginx only"


def test_nginx_balances_every_replica_and_prometheus_scrapes_every_replica(
    stack: dict[str, Any],
) -> None:
    replicas = sorted(gateways(stack))
    conf = nginx.GATEWAY_CONF.read_text()
    upstream = re.findall(r"(?m)^\s*server (gateway-\d+):8000", conf)
    assert sorted(upstream) == replicas
    mounts = stack["services"]["nginx"]["volumes"]
    assert any(str(nginx.GATEWAY_CONF) in str(m) for m in mounts), mounts
    for name in replicas:
        assert stack["services"]["nginx"]["depends_on"][name]["condition"] == "service_healthy"

    prom = stack["services"]["prometheus"]
    assert any(str(DEPLOY / "prometheus") in str(m) for m in prom["volumes"])
    scrape = yaml.safe_load((DEPLOY / "prometheus" / "prometheus.yml").read_text())
    assert scrape["rule_files"] == ["alerts.yml"]
    targets = [t for sc in scrape["scrape_configs"][0]["static_configs"] for t in sc["targets"]]
    assert sorted(targets) == [f"{name}:8000" for name in replicas]


def test_grafana_gets_the_shipped_provisioning_and_dashboards(stack: dict[str, Any]) -> None:
    volumes = [str(v) for v in stack["services"]["grafana"]["volumes"]]
    assert any(f"{DEPLOY}/grafana/provisioning:/etc/grafana/provisioning" in v for v in volumes)
    provider = yaml.safe_load(
        (DEPLOY / "grafana" / "provisioning" / "dashboards" / "gateway.yml").read_text()
    )
    path = provider["providers"][0]["options"]["path"]
    assert any(f"{DEPLOY}/grafana/dashboards:{path}" in v for v in volumes), volumes
    datasource = yaml.safe_load(
        (DEPLOY / "grafana" / "provisioning" / "datasources" / "prometheus.yml").read_text()
    )
    assert datasource["datasources"][0]["url"] == "http://prometheus:9090"
    assert "prometheus" in stack["services"]


def test_every_image_is_pinned(stack: dict[str, Any]) -> None:
    for name, svc in stack["services"].items():
        image = svc["image"]
        assert not image.endswith(":latest") and ":" in image, (name, image)


@pytest.mark.parametrize("key", [None, "sk-real-key"])
def test_a_real_key_goes_to_openai_and_the_mock_serves_only_without_one(key: str | None) -> None:
    """Setting only OPENAI_API_KEY in .env sent the real key to the mock container, and every
    run answered from the mock (OPENAI_BASE_URL defaulted to it)."""
    result = compose_config({**SECRETS, **({"OPENAI_API_KEY": key} if key else {})})
    assert result.returncode == 0, result.stderr
    stack = yaml.safe_load(result.stdout)
    for name, svc in gateways(stack).items():
        env = {k: ("" if v is None else str(v)) for k, v in svc["environment"].items()}
        settings = make_settings(
            "sqlite+aiosqlite://",
            openai_api_key=env["OPENAI_API_KEY"],
            openai_base_url=env["OPENAI_BASE_URL"],
            mock_llm_url=env["GATEWAY_MOCK_LLM_URL"],
        )
        expected = None if key else "http://mock-llm:9100/v1"
        assert settings.upstream_base_url == expected, name
        assert env["OPENAI_API_KEY"] == (key or "")


def test_nginx_waits_longer_than_the_longest_plain_run() -> None:
    """A plain run answers when it is done, up to GATEWAY_RUN_TIMEOUT_S: nginx's read timeout
    (300 s) cut runs of 300-600 s with its 504, answered as "no replica, retry shortly"."""
    conf = nginx.GATEWAY_CONF.read_text()
    timeouts = re.findall(r"proxy_(read|send)_timeout (\d+)s;", conf)
    assert {kind for kind, _ in timeouts} == {"read", "send"}
    run_timeout = Settings.model_fields["run_timeout_s"].default
    assert all(int(seconds) > run_timeout for _, seconds in timeouts), timeouts


def test_the_nginx_config_passes_nginx_t(tmp_path: Path) -> None:
    conf = nginx.render(tmp_path / "nginx", 18080, [18001, 18002])
    result = nginx.check(conf)
    assert result.returncode == 0, result.stderr


def test_nginx_replaces_a_client_supplied_forwarded_for(tmp_path: Path) -> None:
    """The replicas trust nginx's X-Forwarded-For (failed-login limits, access log): a client
    that sends its own must not choose the address the gateway sees."""
    seen: list[str | None] = []

    class Echo(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            seen.append(self.headers.get("X-Forwarded-For"))
            self.send_response(200)
            self.send_header("Content-Length", "2")
            self.end_headers()
            self.wfile.write(b"ok")

        def log_message(self, *args: Any) -> None:
            pass

    upstream = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Echo)
    threading.Thread(target=upstream.serve_forever, daemon=True).start()
    listen = free_port()
    conf = nginx.render(tmp_path / "nginx", listen, [upstream.server_address[1]])
    request = urllib.request.Request(
        f"http://127.0.0.1:{listen}/healthz",
        headers={"X-Forwarded-For": "203.0.113.66, 198.51.100.7"},
    )
    try:
        with nginx.serving(conf):
            status, _, _ = nginx.answer_once_up(request)
    finally:
        upstream.shutdown()
        upstream.server_close()
    assert status == 200
    assert seen[-1] == "127.0.0.1"  # the client's address as nginx saw it, nothing else


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def test_no_reachable_replica_is_a_json_503_with_retry_after(tmp_path: Path) -> None:
    """nginx's own 502 (every replica refusing connections, or one dying mid-request) is in
    the gateway's error shape, not nginx's HTML page."""
    listen = free_port()
    conf = nginx.render(tmp_path / "nginx", listen, [free_port()])  # nothing listens there
    request = urllib.request.Request(
        f"http://127.0.0.1:{listen}/v1/agents/assistant/runs",
        data=b'{"input": "hi"}',
        headers={"Content-Type": "application/json"},
    )
    with nginx.serving(conf):
        status, headers, body = nginx.answer_once_up(request)
    assert status == 503
    assert headers["Content-Type"] == "application/json"
    assert headers["Retry-After"] == "1"
    error = json.loads(body)["error"]
    assert error["type"] == "service_unavailable" and error["code"] == "no_replica"


def test_nginx_own_refusals_are_json_and_a_long_jwt_passes(tmp_path: Path) -> None:
    """What nginx answers itself is in the gateway's error shape, not its HTML page; and a
    header the gateway accepts (up to 64 KiB: a long JWT) is not refused at nginx's default
    8 KiB per line."""
    listen = free_port()
    conf = nginx.render(tmp_path / "nginx", listen, [free_port()])  # nothing listens there
    with nginx.serving(conf):
        status, headers, body = nginx.answer_once_up(
            urllib.request.Request(f"http://127.0.0.1:{listen}/metrics")
        )
        assert status == 404 and headers["Content-Type"] == "application/json"
        assert json.loads(body)["error"]["type"] == "not_found_error"

        long_jwt = {"Authorization": "Bearer " + "a" * 20_000}
        status, _, body = nginx.answer_once_up(
            urllib.request.Request(f"http://127.0.0.1:{listen}/v1/agents", headers=long_jwt)
        )
        assert status == 503 and json.loads(body)["error"]["code"] == "no_replica"  # proxied

        too_long = {"Authorization": "Bearer " + "a" * 70_000}
        status, headers, body = nginx.answer_once_up(
            urllib.request.Request(f"http://127.0.0.1:{listen}/v1/agents", headers=too_long)
        )
        assert status == 400 and headers["Content-Type"] == "application/json"
        assert json.loads(body)["error"]["type"] == "invalid_request_error"
