"""Agent-spec checks that need more than the spec itself: the deployment's egress policy for
tool and MCP URLs. Run by the PUT route before the version is stored (422 on failure)."""

from __future__ import annotations

from gateway.core.egress import EgressPolicy, EgressRefusedError
from gateway.core.errors import ValidationFailedError
from tenants.agent.spec import AgentSpec


def check_tool_urls(spec: AgentSpec, policy: EgressPolicy) -> None:
    """Every tenant tool's URL passes the egress guard's static check."""
    for index, tool in enumerate(spec.tools):
        if isinstance(tool, str):
            continue
        try:
            policy.check_url(tool.url)
        except EgressRefusedError as exc:
            raise ValidationFailedError(
                f"tools[{index}].url: {exc}", param=f"tools.{index}.url", code="url_not_allowed"
            ) from None
