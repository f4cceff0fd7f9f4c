"""Writes components/monitoring/prometheusrule.yaml from deploy/prometheus/alerts.yml.

The alert rules have one source, alerts.yml (what Prometheus loads outside Kubernetes and what
the observability tests evaluate); the PrometheusRule is generated from it:

    python deploy/k8s/generate_rules.py           # (re)write the PrometheusRule
    python deploy/k8s/generate_rules.py --check   # exit 1 if it is out of date (tests, CI)
"""

from __future__ import annotations

import sys
from pathlib import Path

import yaml

HERE = Path(__file__).resolve().parent
ALERTS = HERE.parent / "prometheus" / "alerts.yml"
TARGET = HERE / "components" / "monitoring" / "prometheusrule.yaml"
HEADER = (
    "# GENERATED from deploy/prometheus/alerts.yml by deploy/k8s/generate_rules.py: edit\n"
    "# alerts.yml and run `make k8s-rules` (a test fails while this file is out of date).\n"
)


class _Dumper(yaml.SafeDumper):
    """Multi-line strings (the PromQL expressions) as literal blocks, like alerts.yml."""


def _str(dumper: yaml.SafeDumper, data: str) -> yaml.Node:
    style = "|" if "\n" in data else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", data, style=style)


_Dumper.add_representer(str, _str)


def render() -> str:
    """The PrometheusRule manifest for the current alerts.yml."""
    rules = yaml.safe_load(ALERTS.read_text())
    manifest = {
        "apiVersion": "monitoring.coreos.com/v1",
        "kind": "PrometheusRule",
        "metadata": {"name": "agent-gateway"},
        "spec": {"groups": rules["groups"]},
    }
    return HEADER + yaml.dump(manifest, Dumper=_Dumper, sort_keys=False, width=100)


def main(argv: list[str]) -> int:
    text = render()
    if "--check" in argv:
        if not TARGET.exists() or TARGET.read_text() != text:
            print(f"{TARGET} is out of date: run `make k8s-rules`", file=sys.stderr)
            return 1
        return 0
    TARGET.write_text(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
