"""The built-graph cache key covers the version of every agent reachable from the entry."""

from __future__ import annotations

from typing import Any

from gateway.agents.builder import AgentCache
from tenants.agent.spec import AgentSpec

DB: Any = None  # never reached: every look-up below is a cache hit


def _cache(**specs: tuple[int, AgentSpec]) -> AgentCache:
    cache = AgentCache(ttl_s=3600, max_size=100)
    for name, (version, spec) in specs.items():
        cache._active.put(("t", name), (version, spec, None))
    return cache


async def test_a_new_version_two_handoffs_away_rebuilds_the_graph() -> None:
    chain = {
        "triage": (1, AgentSpec(handoffs=["billing"])),
        "billing": (1, AgentSpec(handoffs=["refunds", "triage"])),
        "refunds": (1, AgentSpec()),
    }
    cache = _cache(**chain)
    first = await cache.get(DB, "t", "triage", default_model="m")
    again = await cache.get(DB, "t", "triage", default_model="m")
    assert first is again  # cached
    assert first is not None
    assert first.versions == (("billing", 1), ("refunds", 1), ("triage", 1))
    cache._active.put(("t", "refunds"), (2, AgentSpec(model="other"), None))
    rebuilt = await cache.get(DB, "t", "triage", default_model="m")
    assert rebuilt is not None and rebuilt is not first
    assert rebuilt.versions == (("billing", 1), ("refunds", 2), ("triage", 1))
    assert rebuilt.models == ("m", "other")
    billing = rebuilt.agent.handoffs[0].agent_name
    assert billing == "billing"


async def test_agents_without_handoffs_keep_their_one_version_key() -> None:
    cache = _cache(solo=(3, AgentSpec()))
    built = await cache.get(DB, "t", "solo", default_model="m")
    assert built is not None and built.agent.handoffs == []
    assert list(cache._built) == [("t", "solo", 3)]
