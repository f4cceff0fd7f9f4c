"""One unit of work per request (`SessionDep`, `Database.unit`), on SQLite and PostgreSQL.

A request commits once, after its endpoint returned and before the response is sent; anything
raised rolls back all of it, the writes made before the failure included; the admin cache
invalidation runs only after the commit.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession
from starlette.types import Message, Receive, Scope, Send

import tenants.admin.context
from gateway.core.db import Database, after_commit
from tenants.models import AuditEvent, Tenant
from tenants.tenant.repository import TenantRepository


class Broken(Exception):
    """The failure a test injects after the request's first write."""


async def _tenants(db: Database, slug: str) -> list[Tenant]:
    async with db.session() as session:
        return list((await session.exec(select(Tenant).where(col(Tenant.slug) == slug))).all())


async def _events(db: Database, action: str) -> list[AuditEvent]:
    async with db.session() as session:
        statement = select(AuditEvent).where(col(AuditEvent.action) == action)
        return list((await session.exec(statement)).all())


@pytest.fixture
def notified(app: FastAPI, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The tenant ids whose caches the admin API invalidated."""
    calls: list[str] = []
    invalidation = app.state.invalidation
    original = invalidation.tenant_changed

    async def tenant_changed(tenant_id: str) -> None:
        calls.append(tenant_id)
        await original(tenant_id)

    monkeypatch.setattr(invalidation, "tenant_changed", tenant_changed)
    return calls


async def test_a_failure_after_the_first_write_leaves_nothing_written(
    client: httpx.AsyncClient,
    admin_headers: dict[str, str],
    db: Database,
    notified: list[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    real_record_event = tenants.admin.context.record_event

    async def record_then_fail(session: AsyncSession, **fields: Any) -> AuditEvent:
        await real_record_event(session, **fields)  # the tenant and its event are flushed
        raise Broken("the step after the writes failed")

    monkeypatch.setattr(tenants.admin.context, "record_event", record_then_fail)
    body = {"slug": "half-done", "name": "Half done"}
    failed = await client.post("/admin/tenants", json=body, headers=admin_headers)
    assert failed.status_code == 500, failed.text

    # Rolled back as a whole: neither the tenant nor its audit event, and no invalidation.
    assert await _tenants(db, "half-done") == []
    assert await _events(db, "tenant.create") == []
    assert notified == []
    listed = await client.get("/admin/tenants", headers=admin_headers)
    assert [t["slug"] for t in listed.json()["data"]] == []

    monkeypatch.setattr(tenants.admin.context, "record_event", real_record_event)
    created = await client.post("/admin/tenants", json=body, headers=admin_headers)
    assert created.status_code == 201, created.text  # the slug was never taken
    assert notified == [created.json()["id"]]


async def test_a_2xx_is_committed_before_it_is_sent(
    app: FastAPI,
    admin_headers: dict[str, str],
    db: Database,
    notified: list[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    order: list[str] = []
    real_commit = AsyncSession.commit

    async def commit(self: AsyncSession) -> None:
        await real_commit(self)
        order.append("commit")

    monkeypatch.setattr(AsyncSession, "commit", commit)

    async def watched(scope: Scope, receive: Receive, send: Send) -> None:
        async def sending(message: Message) -> None:
            if message["type"] == "http.response.start":
                order.append(f"response {message['status']}")
            await send(message)

        await app(scope, receive, sending)

    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=watched), base_url="http://gateway.test"
    ) as writer:
        created = await writer.post(
            "/admin/tenants", json={"slug": "durable", "name": "Durable"}, headers=admin_headers
        )
    assert created.status_code == 201, created.text
    assert "commit" in order and order.index("commit") < order.index("response 201"), order
    assert notified == [created.json()["id"]]  # invalidated after the commit, before the answer

    # Another client (another engine, as another replica would) reads it at once.
    [row] = await _tenants(db, "durable")
    assert row.id == created.json()["id"]
    assert [e.target_id for e in await _events(db, "tenant.create")] == [row.id]
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://gateway.test"
    ) as reader:
        read = await reader.get(f"/admin/tenants/{row.id}", headers=admin_headers)
    assert read.status_code == 200 and read.json()["slug"] == "durable"


async def test_a_failed_commit_is_the_error_response(
    client: httpx.AsyncClient,
    admin_headers: dict[str, str],
    db: Database,
    notified: list[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    async def commit(self: AsyncSession) -> None:
        raise Broken("the commit failed")

    monkeypatch.setattr(AsyncSession, "commit", commit)
    response = await client.post(
        "/admin/tenants", json={"slug": "lost", "name": "Lost"}, headers=admin_headers
    )
    monkeypatch.undo()
    assert response.status_code == 500, response.text  # never a 201 for a write not stored
    assert await _tenants(db, "lost") == []
    assert notified == []


# Database.unit itself, as the background writers and the CLI use it.


async def _slug_unit(db: Database, slug: str, *, then: Callable[[], Awaitable[None]]) -> None:
    from tenants.tenant.schemas import TenantCreate
    from tenants.tenant.service import create_tenant

    async with db.unit() as session:
        await create_tenant(session, TenantCreate(slug=slug, name="x"))
        await then()


async def _nothing() -> None:
    return None


async def _fail() -> None:
    raise Broken("inside the unit")


async def test_a_unit_commits_on_success_and_rolls_back_on_error(db: Database) -> None:
    await _slug_unit(db, "kept", then=_nothing)
    with pytest.raises(Broken):
        await _slug_unit(db, "dropped", then=_fail)
    assert [t.slug for t in await _tenants(db, "kept")] == ["kept"]
    assert await _tenants(db, "dropped") == []


async def test_after_commit_runs_only_after_a_commit(db: Database) -> None:
    ran: list[str] = []

    async def note(what: str, session: AsyncSession) -> None:
        async def callback() -> None:
            # Runs once the change is durable: a fresh session already sees it.
            async with db.session() as other:
                found = await TenantRepository(other).get_by_slug(what)
            ran.append(f"{what} visible={found is not None}")

        after_commit(session, callback)

    async with db.unit() as session:
        from tenants.tenant.schemas import TenantCreate
        from tenants.tenant.service import create_tenant

        await create_tenant(session, TenantCreate(slug="noted", name="x"))
        await note("noted", session)
        assert ran == []  # not before the commit
    assert ran == ["noted visible=True"]

    with pytest.raises(Broken):
        async with db.unit() as session:
            await note("never", session)
            raise Broken("rolled back")
    assert ran == ["noted visible=True"]

    async with db.session() as plain:
        with pytest.raises(RuntimeError, match="unit of work"):
            after_commit(plain, _nothing)


async def test_ending_a_unit_on_a_lost_database_keeps_the_blocks_error(
    db: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    def lost(real: Callable[[AsyncSession], Awaitable[None]]) -> Any:
        async def end(self: AsyncSession) -> None:
            await real(self)  # the connection is released all the same
            raise ConnectionResetError("the database went away")

        return end

    monkeypatch.setattr(AsyncSession, "rollback", lost(AsyncSession.rollback))
    monkeypatch.setattr(AsyncSession, "close", lost(AsyncSession.close))
    with pytest.raises(Broken):
        async with db.unit():
            raise Broken("the request's own error")
    assert not db.available  # the circuit opened; the error was not replaced
    monkeypatch.undo()
