"""The OpenAPI document is the contract: schemathesis, every check, against a live gateway.

Two runs, each bounded (`--max-examples`): one with a fixed seed (reproducible in CI) and one
with a random seed (printed in the output, replayable with `--seed`). Both must find nothing:
no undocumented status or header, no 500, no schema-valid request refused, no schema-violating
request accepted, `Allow` listing what the path serves.

A few rules cannot be written in JSON Schema because they compare a value with another field
or with the clock: those operations may also answer 422 to a schema-valid request
(`EXEMPTIONS`, each with the rule that needs it). Everything else is held to the schema.
"""

from __future__ import annotations

import asyncio
import random
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.conftest import ADMIN_TOKEN, make_settings
from tests.gateway.conftest import ADMIN, AGENT_SPEC, mock_llm_base_url
from tests.gateway.server import start_gateway_server

__all__ = ["mock_llm_base_url"]

SCHEMATHESIS = str(Path(sys.executable).with_name("schemathesis"))
MAX_EXAMPLES = 8
FIXED_SEED = 13

POSITIVE = ["2xx", "3xx", "401", "403", "404", "409", "429", "5xx"]
NEGATIVE = [
    "400",
    "401",
    "403",
    "404",
    "405",
    "406",
    "409",
    "413",
    "415",
    "422",
    "428",
    "429",
    "5xx",
]
EXEMPTIONS: dict[str, str] = {
    # operation path regex -> the rule JSON Schema cannot state
    "/usage": "start <= end and at most 366 days (a default end is today)",
    "/keys": "expires_at must lie in the future",
    "/price$": "effective_at must not lie in the past",
    "/jwt$": "public_key / jwks must be real public keys, and only with rs256/es256",
    "/agents/[^/]+$": "tool specs: URLs pass the egress guard, names unique in the spec",
    "/upstreams/[^/]+$": "base_url passes the egress guard (public https unless allowed)",
}


def config_text(key: str) -> str:
    """schemathesis.toml: the credential of each API, and the exemptions. Stateful runs follow
    the schema's own links (and Location headers), never links guessed from parameter names."""
    rejections = ", ".join(f'"{status}"' for status in NEGATIVE)
    lines = [
        "[phases.stateful.inference]",
        'algorithms = ["location-headers"]',
        "",
        "# A body over GATEWAY_MAX_BODY_BYTES is refused with 413 before it is read.",
        "[checks.negative_data_rejection]",
        f"expected-statuses = [{rejections}]",
        "",
        "[[operations]]",
        'include-path-regex = "^/v1/"',
        f'headers = {{ Authorization = "Bearer {key}" }}',
        "",
        "[[operations]]",
        'include-path-regex = "^/admin/"',
        f'headers = {{ Authorization = "Bearer {ADMIN_TOKEN}" }}',
        "",
    ]
    statuses = ", ".join(f'"{status}"' for status in [*POSITIVE, "422"])
    for regex, rule in EXEMPTIONS.items():
        lines += [
            f"# {rule}",
            "[[operations]]",
            f'include-path-regex = "{regex}"',
            f"checks.positive_data_acceptance.expected-statuses = [{statuses}]",
            "",
        ]
    return "\n".join(lines)


@pytest.fixture(scope="module")
def live(
    sqlite_template: Path, tmp_path_factory: pytest.TempPathFactory, mock_llm_base_url: str
) -> Iterator[tuple[str, str]]:
    """A gateway on a fresh SQLite database with one tenant, its key and its agent."""
    db = tmp_path_factory.mktemp("contract") / "gateway.db"
    db.write_bytes(sqlite_template.read_bytes())
    settings = make_settings(
        f"sqlite+aiosqlite:///{db}",
        openai_base_url=mock_llm_base_url,
        upstream_api="chat_completions",
        upstream_max_retries=0,
        # The fuzzer sends bad credentials on purpose: do not lock its address out.
        auth_failure_limit=1_000_000,
        admin_auth_failure_limit=1_000_000,
    )
    base_url, stop = start_gateway_server(settings)
    try:
        yield base_url, asyncio.run(_seed(base_url))
    finally:
        stop()


async def _seed(base_url: str) -> str:
    async with httpx.AsyncClient(base_url=base_url, headers=ADMIN, timeout=30) as c:
        r = await c.post("/admin/tenants", json={"slug": "contract", "name": "Contract"})
        assert r.status_code == 201, r.text
        tenant_id = r.json()["id"]
        r = await c.put(f"/admin/tenants/{tenant_id}/agents/assistant", json=AGENT_SPEC)
        assert r.status_code == 201, r.text
        r = await c.post(f"/admin/tenants/{tenant_id}/keys", json={"name": "contract"})
        assert r.status_code == 201, r.text
        key: str = r.json()["key"]
        return key


@pytest.mark.parametrize("seed", [FIXED_SEED, random.randrange(1, 2**31)], ids=["fixed", "random"])
def test_the_schema_holds_against_the_gateway(
    live: tuple[str, str], tmp_path: Path, seed: int
) -> None:
    """The tenant API first, then the admin API (whose fuzzing may delete the tenant whose key
    the tenant API needs)."""
    base_url, key = live
    config = tmp_path / "schemathesis.toml"
    config.write_text(config_text(key))
    for api in ("^/v1/", "^/admin/"):
        result = subprocess.run(
            [
                SCHEMATHESIS,
                "--config-file",
                str(config),
                "run",
                f"{base_url}/openapi.json",
                "--include-path-regex",
                api,
                "--checks",
                "all",
                "--max-examples",
                str(MAX_EXAMPLES),
                "--seed",
                str(seed),
                "--no-color",
                "--request-timeout",
                "30",
            ],
            # Its cache (failures replayed first on the next run) stays in the test's directory,
            # so every run starts from the seed alone.
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=1200,
            check=False,
        )
        failures = result.stdout.partition("FAILURES")[2][:12000]  # a body can be huge
        output = f"{api} seed {seed}:\n{failures}\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
        assert result.returncode == 0, output
