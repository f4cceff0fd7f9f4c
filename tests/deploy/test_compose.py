"""deploy/compose.yaml, as `docker-compose config` resolves it, and the nginx config it mounts.

No container engine runs here: the stack is checked as compose would run it (the resolved
config) and nginx checks the shipped config with `nginx -t`; the scale-out test runs that same
nginx config for real in front of gateway replicas.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.conftest import IN_CI
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


def test_compose_refuses_to_start_without_the_secrets() -> None:
    result = compose_config({})
    assert result.returncode != 0
    assert "GATEWAY_SECRET_KEY" in result.stderr or "POSTGRES_PASSWORD" in result.stderr


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


def test_the_nginx_config_passes_nginx_t(tmp_path: Path) -> None:
    conf = nginx.render(tmp_path / "nginx", 18080, [18001, 18002])
    result = nginx.check(conf)
    assert result.returncode == 0, result.stderr
