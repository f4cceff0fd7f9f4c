"""Fixtures for the deploy tests: the mock LLM (shared with the data-plane tests)."""

from tests.gateway.conftest import mock_llm_base_url  # noqa: F401 (re-exported fixture)
