"""Usage reports: grouping, totals, date ranges, query validation, the admin routes."""

from __future__ import annotations

import itertools
from datetime import UTC, date, datetime, timedelta
from typing import Any

import httpx
import pytest

from gateway.core.clock import utcnow
from gateway.core.db import Database
from tenants.models import ModelPrice, UsageRecord
from tenants.usage.repository import UsageRepository
from tests.tenants.conftest import MakeTenant

_runs = itertools.count(1)


def record(tenant_id: str, day: date, **fields: Any) -> UsageRecord:
    values: dict[str, Any] = {
        "run_id": f"run_{next(_runs):08d}",
        "tenant_id": tenant_id,
        "key_id": "key_a",
        "user": None,
        "agent": "bot",
        "agent_version": 1,
        "model": "gpt-4.1-mini",
        "requests": 1,
        "input_tokens": 10,
        "output_tokens": 5,
        "total_tokens": 15,
        "status": "completed",
        "latency_ms": 100,
        "day": day,
        "created_at": datetime(day.year, day.month, day.day, 12, tzinfo=UTC),
    }
    values.update(fields)
    return UsageRecord(**values)


async def add(db: Database, *records: UsageRecord) -> None:
    async with db.unit() as session:  # repositories never commit: the unit does
        await UsageRepository(session).add_many(list(records))


def counters(runs: int, requests: int, inp: int, out: int) -> dict[str, Any]:
    """A report row's counters; no model here has a price, so every run is unpriced."""
    return {
        "runs": runs,
        "requests": requests,
        "input_tokens": inp,
        "output_tokens": out,
        "total_tokens": inp + out,
        "unpriced_runs": runs,
        "cost_usd": "0",
        "unpriced": runs > 0,
    }


async def test_report_groups_and_totals(db: Database, make_tenant: MakeTenant) -> None:
    tenant = (await make_tenant())["id"]
    day1, day2 = date(2026, 3, 1), date(2026, 3, 2)
    await add(
        db,
        record(tenant, day1, agent="bot", model="m1", key_id="key_a", user="alice"),
        record(
            tenant, day1, agent="helper", model="m2", key_id=None, user="bob",
            requests=3, input_tokens=100, output_tokens=50, total_tokens=150,
        ),
        record(tenant, day2, agent="bot", model="m2", key_id="key_b", user=None, status="failed"),
    )  # fmt: skip
    async with db.session() as session:
        repository = UsageRepository(session)

        async def report(group_by: str) -> dict[str, Any]:
            return await repository.report(
                tenant_id=tenant, group_by=group_by, start=day1, end=day2
            )

        by_day = await report("day")
        assert by_day == {
            "object": "usage.report",
            "group_by": "day",
            "start": "2026-03-01",
            "end": "2026-03-02",
            "data": [
                {"day": "2026-03-01", **counters(2, 4, 110, 55)},
                {"day": "2026-03-02", **counters(1, 1, 10, 5)},
            ],
            "totals": counters(3, 5, 120, 60),
        }
        by_agent = await report("agent")
        assert by_agent["data"] == [
            {"agent": "bot", **counters(2, 2, 20, 10)},
            {"agent": "helper", **counters(1, 3, 100, 50)},
        ]
        by_model = await report("model")
        assert [(row["model"], row["runs"]) for row in by_model["data"]] == [("m1", 1), ("m2", 2)]
        by_key = await report("key")
        assert [(row["key"], row["runs"]) for row in by_key["data"]] == [
            ("key_a", 1),
            ("key_b", 1),
            (None, 1),
        ]
        by_user = await report("user")
        assert [(row["user"], row["input_tokens"]) for row in by_user["data"]] == [
            ("alice", 10),
            ("bob", 100),
            (None, 10),
        ]
        for grouped in (by_agent, by_model, by_key, by_user):
            assert grouped["totals"] == counters(3, 5, 120, 60)


async def test_report_filters_inclusive_days(db: Database, make_tenant: MakeTenant) -> None:
    tenant = (await make_tenant())["id"]
    await add(db, *(record(tenant, date(2026, 5, d)) for d in range(1, 8)))
    async with db.session() as session:
        report = await UsageRepository(session).report(
            tenant_id=tenant, group_by="day", start=date(2026, 5, 3), end=date(2026, 5, 5)
        )
    assert [row["day"] for row in report["data"]] == ["2026-05-03", "2026-05-04", "2026-05-05"]
    assert report["totals"]["runs"] == 3


async def test_empty_report_has_zero_totals(db: Database, make_tenant: MakeTenant) -> None:
    today = utcnow().date()
    tenant = (await make_tenant())["id"]
    async with db.session() as session:
        report = await UsageRepository(session).report(
            tenant_id=tenant, group_by="agent", start=today, end=today
        )
    assert report["data"] == []
    assert report["totals"] == counters(0, 0, 0, 0)


async def test_add_many_skips_runs_already_stored(db: Database, make_tenant: MakeTenant) -> None:
    today = utcnow().date()
    tenant = (await make_tenant())["id"]
    first = record(tenant, today, run_id="run_dup")
    await add(db, first)
    await add(db, record(tenant, today, run_id="run_dup"), record(tenant, today))
    await add(db)
    async with db.session() as session:
        report = await UsageRepository(session).report(
            tenant_id=tenant, group_by="day", start=today, end=today
        )
    assert report["totals"]["runs"] == 2


async def test_tenant_usage_route_defaults_to_last_30_days(
    client: httpx.AsyncClient, admin_headers: dict[str, str], db: Database, make_tenant: MakeTenant
) -> None:
    today = utcnow().date()
    tenant = (await make_tenant())["id"]
    await add(
        db,
        record(tenant, today),
        record(tenant, today - timedelta(days=29)),
        record(tenant, today - timedelta(days=30)),
        record(tenant, today + timedelta(days=1)),
    )
    response = await client.get(f"/admin/tenants/{tenant}/usage", headers=admin_headers)
    assert response.status_code == 200
    body = response.json()
    assert body["group_by"] == "day"
    assert (body["start"], body["end"]) == (
        (today - timedelta(days=29)).isoformat(),
        today.isoformat(),
    )
    assert [row["day"] for row in body["data"]] == [
        (today - timedelta(days=29)).isoformat(),
        today.isoformat(),
    ]
    assert body["totals"]["runs"] == 2

    explicit = await client.get(
        f"/admin/tenants/{tenant}/usage",
        params={"group_by": "agent", "start": today.isoformat(), "end": today.isoformat()},
        headers=admin_headers,
    )
    assert explicit.json()["data"] == [{"agent": "bot", **counters(1, 1, 10, 5)}]


@pytest.mark.parametrize(
    ("query", "param"),
    [
        ({"group_by": "tenant"}, "group_by"),
        ({"group_by": "week"}, "group_by"),
        ({"start": "2026-13-01"}, "start"),
        ({"start": "2026-02-30"}, "start"),
        ({"end": "yesterday"}, "end"),
        ({"start": "2026-3-1"}, "start"),
        ({"start": "2026-03-02", "end": "2026-03-01"}, "start"),
        ({"start": "2025-01-01", "end": "2026-01-02"}, "start"),
    ],
)
async def test_tenant_usage_route_rejects_bad_queries(
    client: httpx.AsyncClient,
    admin_headers: dict[str, str],
    make_tenant: MakeTenant,
    query: dict[str, str],
    param: str,
) -> None:
    tenant = (await make_tenant())["id"]
    response = await client.get(
        f"/admin/tenants/{tenant}/usage", params=query, headers=admin_headers
    )
    assert response.status_code == 422
    assert response.json()["error"]["type"] == "invalid_request_error"
    assert response.json()["error"]["param"] == param


async def test_a_366_day_range_is_accepted(
    client: httpx.AsyncClient, admin_headers: dict[str, str], make_tenant: MakeTenant
) -> None:
    tenant = (await make_tenant())["id"]
    response = await client.get(
        f"/admin/tenants/{tenant}/usage",
        params={"start": "2024-01-01", "end": "2024-12-31"},
        headers=admin_headers,
    )
    assert response.status_code == 200


@pytest.mark.parametrize(
    ("query", "start", "end"),
    [
        ({"end": "0001-01-01"}, "0001-01-01", "0001-01-01"),
        ({"end": "0001-01-10"}, "0001-01-01", "0001-01-10"),
        ({"start": "9999-12-31", "end": "9999-12-31"}, "9999-12-31", "9999-12-31"),
        ({"end": "9999-12-31", "group_by": "day"}, "9999-12-02", "9999-12-31"),
    ],
)
async def test_the_first_and_last_days_of_the_calendar_are_an_empty_report(
    client: httpx.AsyncClient,
    admin_headers: dict[str, str],
    make_tenant: MakeTenant,
    query: dict[str, str],
    start: str,
    end: str,
) -> None:
    """A default range ending in the first 30 days of year 1 starts on its first day (it
    used to overflow: a 500)."""
    tenant = (await make_tenant())["id"]
    for path, params in (
        (f"/admin/tenants/{tenant}/usage", query),
        ("/admin/usage", query),
        ("/admin/usage/records", {k: v for k, v in query.items() if k != "group_by"}),
    ):
        response = await client.get(path, params=params, headers=admin_headers)
        assert response.status_code == 200, (path, response.text)
        if path != "/admin/usage/records":
            body = response.json()
            assert (body["start"], body["end"], body["data"]) == (start, end, [])
        else:
            assert response.content == b""


async def test_unknown_tenant_usage_is_not_found(
    client: httpx.AsyncClient, admin_headers: dict[str, str]
) -> None:
    response = await client.get("/admin/tenants/ten_nope/usage", headers=admin_headers)
    assert response.status_code == 404
    assert response.json()["error"]["type"] == "not_found_error"


async def test_deleted_tenant_usage_is_gone_from_its_path_but_readable_by_id(
    client: httpx.AsyncClient, admin_headers: dict[str, str], db: Database, make_tenant: MakeTenant
) -> None:
    """Everything under `/admin/tenants/{id}` is 404 once the tenant is deleted; its usage stays
    readable for billing from `/admin/usage?tenant_id=`, and only its own."""
    today = utcnow().date()
    tenant = (await make_tenant())["id"]
    other = (await make_tenant("other"))["id"]
    await add(
        db,
        record(tenant, today, input_tokens=7, output_tokens=3, total_tokens=10),
        record(other, today, input_tokens=1, output_tokens=1, total_tokens=2),
    )
    await client.delete(f"/admin/tenants/{tenant}", headers=admin_headers)
    response = await client.get(f"/admin/tenants/{tenant}/usage", headers=admin_headers)
    assert response.status_code == 404
    assert response.json()["error"]["type"] == "not_found_error"
    response = await client.get(
        "/admin/usage", params={"tenant_id": tenant, "group_by": "day"}, headers=admin_headers
    )
    assert response.status_code == 200
    assert response.json()["totals"] == counters(1, 1, 7, 3)
    assert [row["day"] for row in response.json()["data"]] == [today.isoformat()]


async def test_admin_usage_filter_by_unknown_tenant_is_not_found(
    client: httpx.AsyncClient, admin_headers: dict[str, str]
) -> None:
    for tenant_id in ("ten_nope", "x" * 500):
        response = await client.get(
            "/admin/usage", params={"tenant_id": tenant_id}, headers=admin_headers
        )
        assert response.status_code == 404
        assert response.json()["error"]["param"] == "tenant_id"


async def test_admin_usage_groups_by_tenant_with_slugs(
    client: httpx.AsyncClient, admin_headers: dict[str, str], db: Database, make_tenant: MakeTenant
) -> None:
    today = utcnow().date()
    acme = (await make_tenant("acme"))["id"]
    beta = (await make_tenant("beta"))["id"]
    await add(
        db,
        record(acme, today),
        record(acme, today, agent="other"),
        record(beta, today, input_tokens=1, output_tokens=1, total_tokens=2),
    )
    response = await client.get("/admin/usage", headers=admin_headers)
    assert response.status_code == 200
    body = response.json()
    assert body["group_by"] == "tenant"
    rows = sorted(body["data"], key=lambda row: row["tenant_slug"])
    assert rows == [
        {"tenant": acme, "tenant_slug": "acme", **counters(2, 2, 20, 10)},
        {"tenant": beta, "tenant_slug": "beta", **counters(1, 1, 1, 1)},
    ]
    assert body["totals"] == counters(3, 3, 21, 11)

    # Agent names and users (JWT `sub`) are names within a tenant: over all tenants, each
    # tenant's "bot" (and "alice") is a row of its own, with its tenant id.
    await add(db, record(acme, today, user="alice"), record(beta, today, user="alice"))
    by_agent = await client.get("/admin/usage?group_by=agent", headers=admin_headers)
    assert sorted(
        (row["agent"], row["tenant_id"], row["runs"]) for row in by_agent.json()["data"]
    ) == sorted([("bot", acme, 2), ("bot", beta, 2), ("other", acme, 1)])
    by_user = await client.get("/admin/usage?group_by=user", headers=admin_headers)
    alices = [row for row in by_user.json()["data"] if row["user"] == "alice"]
    assert sorted((row["tenant_id"], row["runs"]) for row in alices) == sorted(
        [(acme, 1), (beta, 1)]
    )
    one = await client.get(f"/admin/usage?group_by=user&tenant_id={acme}", headers=admin_headers)
    assert [row for row in one.json()["data"] if row["user"] == "alice"] == [
        {"user": "alice", **counters(1, 1, 10, 5)}
    ]
    async with db.unit() as session:
        repository = UsageRepository(session)
        for group_by in ("agent", "user"):
            args = {"tenant_id": None, "group_by": group_by, "start": today, "end": today}
            assert await repository.raw_report(**args) == await repository.report(**args)
    bad = await client.get("/admin/usage?group_by=planet", headers=admin_headers)
    assert bad.status_code == 422


async def test_window_totals_sum_today_and_this_month_from_the_rollups(db: Database) -> None:
    # What a budget set now must count: today's tokens and spend, this month's spend.
    model = "window-model"
    async with db.unit() as session:  # 1 and 2 micro-dollars a token, in force for a year
        since = datetime.now(UTC) - timedelta(days=400)
        session.add(
            ModelPrice(model=model, effective_at=since, input_pico=10**6, output_pico=2 * 10**6)
        )
    today = datetime.now(UTC).date()
    earlier = today.replace(day=1) if today.day > 1 else None
    last_month = today.replace(day=1) - timedelta(days=1)
    days = [today, today, last_month] + ([earlier] if earlier is not None else [])
    await add(db, *(record("ten_w", day, model=model) for day in days))
    await add(db, record("ten_x", today, model=model))
    async with db.session() as session:
        tokens, spent_today, spent_month = await UsageRepository(session).window_totals(
            "ten_w", today
        )
    one_run = 10 * 10**6 + 5 * 2 * 10**6  # 10 input and 5 output tokens
    assert tokens == 30  # two runs of 15 today; ten_x's and other days' are not counted
    assert spent_today == 2 * one_run
    assert spent_month == (3 if earlier is not None else 2) * one_run
