"""Model prices: the admin routes, the audit trail, and exact costs in records and reports."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import httpx

from gateway.core.clock import utcnow
from gateway.core.db import Database
from tenants.models import UsageRecord
from tests.tenants.conftest import MakeTenant
from tests.tenants.test_admin_usage import add, record

GATEWAY = str(Path(sys.executable).parent / "gateway")
PRICE = {"input_per_mtok": "0.40", "cached_input_per_mtok": "0.10", "output_per_mtok": "1.60"}


async def put_price(
    client: httpx.AsyncClient, headers: dict[str, str], model: str, **body: Any
) -> httpx.Response:
    return await client.put(f"/admin/models/{model}/price", json=body, headers=headers)


async def test_price_routes_and_audit(
    client: httpx.AsyncClient, admin_headers: dict[str, str]
) -> None:
    r = await put_price(client, admin_headers, "gpt-4.1-mini", **PRICE)
    assert r.status_code == 200, r.text
    assert r.json() | {"effective_at": None, "created_at": None} == {
        "model": "gpt-4.1-mini",
        "priced": True,
        "input_per_mtok": "0.4",
        "cached_input_per_mtok": "0.1",
        "output_per_mtok": "1.6",
        "reasoning_per_mtok": None,
        "effective_at": None,
        "created_at": None,
    }
    got = await client.get("/admin/models/gpt-4.1-mini/price", headers=admin_headers)
    assert got.json()["output_per_mtok"] == "1.6"
    listed = (await client.get("/admin/models/prices", headers=admin_headers)).json()["data"]
    assert [row["model"] for row in listed] == ["gpt-4.1-mini"]

    audit = (await client.get("/admin/audit?action=price.put", headers=admin_headers)).json()
    assert [(e["target_type"], e["target_id"]) for e in audit["data"]] == [
        ("model_price", "gpt-4.1-mini")
    ]
    assert audit["data"][0]["details"]["input_per_mtok"] == "0.4"

    r = await client.delete("/admin/models/gpt-4.1-mini/price", headers=admin_headers)
    assert r.status_code == 204
    got = await client.get("/admin/models/gpt-4.1-mini/price", headers=admin_headers)
    assert got.status_code == 404 and got.json()["error"]["code"] == "price_not_found"
    again = await client.delete("/admin/models/gpt-4.1-mini/price", headers=admin_headers)
    assert again.status_code == 404
    assert (await client.get("/admin/models/prices", headers=admin_headers)).json()["data"] == []
    history = await client.get("/admin/models/gpt-4.1-mini/price/history", headers=admin_headers)
    assert [row["priced"] for row in history.json()["data"]] == [True, False]
    deleted = (await client.get("/admin/audit?action=price.delete", headers=admin_headers)).json()
    assert len(deleted["data"]) == 1

    # A scheduled change is cancelled by DELETE too ("no price from now on"), even when no
    # price is in force yet; with nothing in force and nothing scheduled, DELETE is 404.
    later = (utcnow() + timedelta(hours=1)).isoformat()
    r = await put_price(client, admin_headers, "gpt-4.1-nano", **PRICE, effective_at=later)
    assert r.status_code == 200, r.text
    r = await client.delete("/admin/models/gpt-4.1-nano/price", headers=admin_headers)
    assert r.status_code == 204
    history = await client.get("/admin/models/gpt-4.1-nano/price/history", headers=admin_headers)
    assert history.json()["data"] == []
    r = await client.delete("/admin/models/gpt-4.1-nano/price", headers=admin_headers)
    assert r.status_code == 404


async def test_a_model_named_with_slashes_is_priced_like_any(
    client: httpx.AsyncClient, admin_headers: dict[str, str]
) -> None:
    # Namespaced names are common on OpenAI-compatible upstreams ("openai/gpt-4o").
    model = "openai/gpt-4o"
    r = await put_price(client, admin_headers, model, **PRICE)
    assert r.status_code == 200, r.text
    assert r.json()["model"] == model
    for path in ("openai/gpt-4o", "openai%2Fgpt-4o"):
        got = await client.get(f"/admin/models/{path}/price", headers=admin_headers)
        assert got.status_code == 200 and got.json()["model"] == model, got.text
    history = await client.get(f"/admin/models/{model}/price/history", headers=admin_headers)
    assert [row["model"] for row in history.json()["data"]] == [model]
    r = await client.delete(f"/admin/models/{model}/price", headers=admin_headers)
    assert r.status_code == 204
    got = await client.get(f"/admin/models/{model}/price", headers=admin_headers)
    assert got.status_code == 404
    r = await put_price(client, admin_headers, "/leading", **PRICE)  # "//leading/price"
    assert r.status_code in (404, 422)


async def test_prices_are_exact_decimals_never_in_the_past(
    client: httpx.AsyncClient, admin_headers: dict[str, str]
) -> None:
    bad = [
        {**PRICE, "input_per_mtok": "0.0000001"},  # 7 decimal places
        {**PRICE, "output_per_mtok": "-1"},
        {**PRICE, "output_per_mtok": "abc"},
        {"input_per_mtok": "1"},  # output missing
        {**PRICE, "effective_at": (utcnow() - timedelta(hours=1)).isoformat()},
        {**PRICE, "effective_at": "9999-12-31T23:59:59-01:00"},  # past year 9999 in UTC
        {**PRICE, "surprise": "1"},
    ]
    for body in bad:
        r = await put_price(client, admin_headers, "m", **body)
        assert r.status_code == 422, (body, r.text)
    assert (await client.get("/admin/models/m/price/history", headers=admin_headers)).json()[
        "data"
    ] == []
    fine = await put_price(
        client, admin_headers, "m", input_per_mtok="0.075", output_per_mtok=3, **{}
    )
    assert fine.status_code == 200, fine.text
    assert fine.json()["input_per_mtok"] == "0.075" and fine.json()["output_per_mtok"] == "3"


async def test_each_run_costs_the_price_in_force_when_it_started(
    client: httpx.AsyncClient, admin_headers: dict[str, str], db: Database, make_tenant: MakeTenant
) -> None:
    tenant = (await make_tenant())["id"]
    now = utcnow()
    later = now + timedelta(hours=1)
    tokens = {
        "input_tokens": 1000,
        "cached_tokens": 400,
        "output_tokens": 500,
        "reasoning_tokens": 100,
        "total_tokens": 1500,
    }

    def run(at: datetime, model: str = "gpt-4.1-mini") -> UsageRecord:
        return record(tenant, at.date(), created_at=at, model=model, **tokens)

    before = run(now - timedelta(minutes=5))  # before any price: unpriced
    r = await put_price(client, admin_headers, "gpt-4.1-mini", **PRICE)
    assert r.status_code == 200
    scheduled = {
        "input_per_mtok": "0.8",
        "output_per_mtok": "2",
        "reasoning_per_mtok": "4",
        "effective_at": later.isoformat(),
    }
    r = await put_price(client, admin_headers, "gpt-4.1-mini", **scheduled)
    assert r.status_code == 200, r.text
    # Still the first price now; the second only from `later` on.
    current = await client.get("/admin/models/gpt-4.1-mini/price", headers=admin_headers)
    assert current.json()["input_per_mtok"] == "0.4"

    first = run(utcnow())
    second = run(later + timedelta(minutes=1))
    other = run(utcnow(), model="unpriced-model")
    await add(db, before, first, second, other)

    export = await client.get(
        "/admin/usage/records",
        params={"tenant_id": tenant, "start": (now - timedelta(days=1)).date().isoformat(),
                "end": (later + timedelta(days=1)).date().isoformat()},
        headers=admin_headers,
    )  # fmt: skip
    costs = {row["run_id"]: (row["cost_usd"], row["unpriced"]) for row in lines(export)}
    # 600 x 0.40 + 400 x 0.10 + 500 x 1.60 = 1080 micro-dollars
    # 1000 x 0.80 + 400 x 2 + 100 x 4 = 2000 micro-dollars (cached input at the input price)
    assert costs == {
        before.run_id: ("0", True),
        first.run_id: ("0.00108", False),
        second.run_id: ("0.002", False),
        other.run_id: ("0", True),
    }

    report = await client.get(
        f"/admin/tenants/{tenant}/usage",
        params={"group_by": "model", "start": (now - timedelta(days=1)).date().isoformat(),
                "end": (later + timedelta(days=1)).date().isoformat()},
        headers=admin_headers,
    )  # fmt: skip
    body = report.json()
    by_model = {row["model"]: row for row in body["data"]}
    assert by_model["gpt-4.1-mini"]["cost_usd"] == "0.00308"
    assert by_model["gpt-4.1-mini"]["unpriced_runs"] == 1 and by_model["gpt-4.1-mini"]["unpriced"]
    assert by_model["unpriced-model"]["cost_usd"] == "0" and by_model["unpriced-model"]["unpriced"]
    assert body["totals"]["cost_usd"] == "0.00308" and body["totals"]["unpriced_runs"] == 2


def test_exact_sums_never_drift() -> None:
    """A million runs of 103 input tokens at $0.15 per million: exactly $15.45, as decimals
    say (a float sum of the per-run costs would not be exact)."""
    from tenants.price.money import usd
    from tenants.price.pricing import Price

    price = Price(input=150_000, cached_input=150_000, output=0, reasoning=0)
    one = price.cost(input_tokens=103, output_tokens=0, cached_tokens=0, reasoning_tokens=0)
    assert usd(one) == "0.00001545"
    assert usd(one * 1_000_000) == "15.45"
    assert sum([0.00001545] * 1_000_000) != 15.45


def lines(response: httpx.Response) -> list[dict[str, Any]]:
    assert response.status_code == 200, response.text
    return [json.loads(line) for line in response.text.splitlines()]


def test_gateway_prices_set_command(tmp_path: Path) -> None:
    """`gateway prices set` as an operator runs it: the price applies, audited as `cli`."""
    url = f"sqlite+aiosqlite:///{tmp_path / 'cli.db'}"
    env = {**os.environ, "GATEWAY_DATABASE_URL": url, "GATEWAY_ENV": "development"}

    def gateway(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [GATEWAY, *args], env=env, capture_output=True, text=True, timeout=60, check=False
        )

    assert gateway("db", "upgrade").returncode == 0
    r = gateway("prices", "set", "gpt-4.1", "--input", "2", "--cached-input", "0.5",
                "--output", "8")  # fmt: skip
    assert r.returncode == 0, r.stderr
    price = json.loads(r.stdout)
    assert (price["model"], price["input_per_mtok"], price["cached_input_per_mtok"]) == (
        "gpt-4.1",
        "2",
        "0.5",
    )
    r = gateway("prices", "set", "gpt-4.1", "--input", "0.1234567", "--output", "1")
    assert r.returncode == 1 and "error:" in r.stderr and "Traceback" not in r.stderr

    db = sqlite3.connect(url.split("///", 1)[1])
    audit = db.execute("SELECT actor, action, target_id FROM audit_events").fetchall()
    prices = db.execute("SELECT model, input_pico, output_pico FROM model_prices").fetchall()
    db.close()
    assert audit == [("cli", "price.put", "gpt-4.1")]
    assert prices == [("gpt-4.1", 2_000_000, 8_000_000)]


async def test_price_lists_page_like_every_list(
    client: httpx.AsyncClient, admin_headers: dict[str, str]
) -> None:
    for model in ("m-c", "m-a", "m-b"):
        r = await put_price(client, admin_headers, model, **PRICE)
        assert r.status_code == 200, r.text
    listed = await client.get("/admin/models/prices?limit=2", headers=admin_headers)
    assert listed.status_code == 200, listed.text
    page = listed.json()
    assert [row["model"] for row in page["data"]] == ["m-a", "m-b"] and page["has_more"] is True
    rest = await client.get("/admin/models/prices?limit=2&after=m-b", headers=admin_headers)
    assert [row["model"] for row in rest.json()["data"]] == ["m-c"]
    assert rest.json()["has_more"] is False
    assert (await client.get("/admin/models/prices", headers=admin_headers)).json()[
        "has_more"
    ] is False

    later = (utcnow() + timedelta(hours=1)).isoformat()
    r = await put_price(client, admin_headers, "m-a", **PRICE, effective_at=later)
    assert r.status_code == 200, r.text
    path = "/admin/models/m-a/price/history"
    first = (await client.get(f"{path}?limit=1", headers=admin_headers)).json()
    assert len(first["data"]) == 1 and first["has_more"] is True
    cursor = first["data"][0]["effective_at"]
    second = (
        await client.get(path, params={"limit": 1, "after": cursor}, headers=admin_headers)
    ).json()
    assert second["has_more"] is False
    assert second["data"][0]["effective_at"] > cursor  # the scheduled change, after the first
    bad = await client.get(f"{path}?limit=101", headers=admin_headers)
    assert bad.status_code == 422


async def test_changes_of_one_instant_are_never_split_across_history_pages(
    client: httpx.AsyncClient, admin_headers: dict[str, str]
) -> None:
    """The cursor is the last change's `effective_at`: two changes scheduled for one instant
    come on one page, or the second would never be listed to a client paging through."""
    later = (utcnow() + timedelta(hours=1)).isoformat()
    for price in ("1", "2"):
        body = {"input_per_mtok": price, "output_per_mtok": price, "effective_at": later}
        r = await put_price(client, admin_headers, "tied-model", **body)
        assert r.status_code == 200, r.text
    r = await put_price(client, admin_headers, "tied-model", **PRICE)  # in force now: first
    assert r.status_code == 200, r.text
    url = "/admin/models/tied-model/price/history"
    seen: list[str] = []
    after: str | None = None
    for _ in range(5):
        params = {"limit": "1"} | ({"after": after} if after else {})
        page = (await client.get(url, params=params, headers=admin_headers)).json()
        seen += [row["input_per_mtok"] for row in page["data"]]
        if not page["has_more"]:
            break
        after = page["data"][-1]["effective_at"]
    assert seen == ["0.4", "1", "2"]
