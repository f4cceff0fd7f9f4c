"""`Run` owns a run from admission to settlement: entering admits it and raises the in-flight
gauge; however the block ends, the run is settled exactly once (one usage record, the gauge
back), with the status its end gave or the one its exit implies."""

from __future__ import annotations

import dataclasses
import inspect
from pathlib import Path

import pytest

from gateway.agents.builder import AgentCache, build_agent
from gateway.agents.providers import ProviderRegistry
from gateway.auth.principal import Principal
from gateway.core.db import Database
from gateway.core.errors import RateLimitedError, UpstreamError
from gateway.runs.handle import RunHandle
from gateway.runs.lifecycle import Run
from gateway.runs.service import RunService
from gateway.usage.recorder import UsageRecorder
from observability.metrics import IN_FLIGHT
from tenants.agent.spec import AgentSpec
from tests.conftest import make_settings

TENANT = "lifecycle"


@pytest.fixture
def service(tmp_path: Path) -> RunService:
    settings = make_settings(f"sqlite+aiosqlite:///{tmp_path / 'gateway.db'}")
    db = Database(settings.database_url)
    return RunService(
        settings=settings,
        db=db,
        agents=AgentCache(ttl_s=1, max_size=8),
        providers=ProviderRegistry(settings),
        recorder=UsageRecorder(db, batch_size=100, flush_interval_s=1, max_queue=100),
    )


def admitted(service: RunService) -> Run:
    principal = Principal(
        tenant_id="t1", tenant_slug=TENANT, tenant_status="active", key_id=None, scopes=frozenset()
    )
    built = build_agent("solo", 1, AgentSpec(), default_model="m")

    async def admit() -> RunHandle:
        return RunHandle(principal=principal, built=built, provider=service.providers.default())

    return Run(service, admit)


def in_flight() -> float:
    return IN_FLIGHT.labels(TENANT)._value.get()


def statuses(service: RunService) -> list[str]:
    # Records are built with model_construct: the batch insert reads their fields as a dict.
    return [vars(record)["status"] for record in service.recorder._pending]


async def test_an_exit_without_an_outcome_settles_the_run_cancelled(service: RunService) -> None:
    before = in_flight()
    async with admitted(service) as run:
        assert in_flight() == before + 1
        assert run.handle.built.name == "solo"
    assert in_flight() == before
    assert statuses(service) == ["cancelled"]


async def test_an_ended_run_is_not_settled_again_by_its_exit(service: RunService) -> None:
    before = in_flight()
    async with admitted(service) as run:
        await run.end("completed")
        assert in_flight() == before and run.settled
    assert in_flight() == before
    assert statuses(service) == ["completed"]


async def test_an_escaping_error_gives_the_status(service: RunService) -> None:
    with pytest.raises(RateLimitedError):
        async with admitted(service):
            raise RateLimitedError("over", code="tokens_per_minute", retry_after_s=1)
    with pytest.raises(UpstreamError):
        async with admitted(service):
            raise UpstreamError("the upstream answered 500")
    assert statuses(service) == ["rate_limited", "failed"]


async def test_a_refused_admission_takes_and_records_nothing(service: RunService) -> None:
    before = in_flight()

    async def refuse() -> RunHandle:
        raise UpstreamError("no")

    with pytest.raises(UpstreamError):
        async with Run(service, refuse):
            pytest.fail("a refused run's block never runs")
    assert in_flight() == before and statuses(service) == []


def test_the_handle_is_state_only() -> None:
    """RunHandle: fields, and the meter made from them; no behaviour of its own."""
    methods = {
        name
        for name, member in inspect.getmembers(RunHandle, inspect.isfunction)
        if not name.startswith("__")
    }
    assert methods == set()
    assert {f.name for f in dataclasses.fields(RunHandle)} >= {"principal", "built", "ticket"}
