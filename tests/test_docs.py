"""The configuration page is generated from `Settings`: it must say what the code reads."""

from __future__ import annotations

from pathlib import Path

from gateway.core import config_docs

ROOT = Path(__file__).resolve().parent.parent


def test_every_setting_has_a_docstring() -> None:
    assert config_docs.undocumented() == []


def test_the_configuration_page_matches_settings() -> None:
    page = (ROOT / "docs" / "configuration.md").read_text()
    assert page == config_docs.render(), "docs/configuration.md is stale: run make docs-config"


def test_the_page_names_every_variable() -> None:
    page = (ROOT / "docs" / "configuration.md").read_text()
    for name in ("GATEWAY_REDIS_MAX_CONNECTIONS", "GATEWAY_GC_GEN0_THRESHOLD", "OPENAI_API_KEY"):
        assert f"`{name}`" in page


def test_every_default_is_a_value_a_reader_can_set() -> None:
    # A default_factory field showed pydantic's marker `PydanticUndefined` as its default.
    page = config_docs.render()
    assert "Undefined" not in page
    assert "| `GATEWAY_DEFAULT_TENANT_LIMITS` | unset |" in page
