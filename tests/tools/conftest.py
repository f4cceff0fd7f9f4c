"""Fixtures of the tenant-tool tests: the session's mock LLM."""

from __future__ import annotations

from tests.gateway.conftest import mock_llm_base_url

__all__ = ["mock_llm_base_url"]
