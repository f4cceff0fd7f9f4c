"""Agent-spec checks that need more than the spec itself, run by the PUT route before the
version is stored and by the activation of an older version (422 on failure): tool and MCP
URLs against the deployment's egress policy, the model (the classifier's, the handoff targets')
against the tenant's `allowed_models`, and the named upstream against the tenant's
upstreams."""

from __future__ import annotations

from sqlmodel.ext.asyncio.session import AsyncSession

from gateway.core.config import Settings
from gateway.core.egress import EgressPolicy, EgressRefusedError
from gateway.core.errors import ValidationFailedError
from tenants.agent import service
from tenants.agent.repository import AgentRepository
from tenants.agent.spec import AgentSpec, stored_spec
from tenants.models import Agent, AgentVersion
from tenants.scoping import lock_tenant, require_tenant
from tenants.upstream.service import require_upstream


async def put_checked_agent(
    session: AsyncSession, settings: Settings, tenant_id: str, name: str, spec: AgentSpec
) -> tuple[Agent, AgentVersion, bool]:
    """Store `spec` as the agent's next, active version after every check: the one path of the
    admin API's PUT and of `gateway agents put`. The tenant's lock holds from the checks until
    the version is stored, so a concurrent change of its upstreams or allowed models cannot
    slip between them. Returns the agent, the version and whether the agent was created."""
    await lock_tenant(session, tenant_id)
    await check_spec(session, settings, tenant_id, spec, name=name)
    return await service.put_agent(session, tenant_id, name, spec)


async def check_spec(
    session: AsyncSession,
    settings: Settings,
    tenant_id: str,
    spec: AgentSpec,
    *,
    name: str | None = None,
) -> None:
    """Every check of a spec about to be stored for the tenant as agent `name` (404 for an
    unknown tenant)."""
    check_tool_urls(spec, EgressPolicy.parse(settings.egress_allow))
    tenant = await require_tenant(session, tenant_id)
    model = spec.model or settings.default_model
    if tenant.allowed_models is not None and model not in tenant.allowed_models:
        raise ValidationFailedError(
            f"model: '{model}' is not among this tenant's allowed models.",
            param="model",
            code="model_not_allowed",
        )
    classifier = spec.guardrails.input.classifier if spec.guardrails is not None else None
    if (
        classifier is not None
        and tenant.allowed_models is not None
        and (classifier.model or model) not in tenant.allowed_models
    ):
        raise ValidationFailedError(
            f"guardrails.input.classifier.model: '{classifier.model or model}' is not among "
            "this tenant's allowed models.",
            param="guardrails.input.classifier.model",
            code="model_not_allowed",
        )
    if tenant.allowed_models is not None and spec.handoff_targets():
        # A run reaches every agent down its handoffs (run time refuses the whole run when
        # one of them is on a model outside the list), through other agents' handoffs too.
        active = {
            agent.name: stored_spec(version.spec)
            for agent, version in await AgentRepository(session).list_active(tenant.id)
        }
        pending, seen = list(spec.handoff_targets()), {name}
        while pending:
            target = pending.pop(0)
            reached = active.get(target)
            if target in seen or reached is None:
                continue
            seen.add(target)
            target_model = reached.model or settings.default_model
            if target_model not in tenant.allowed_models:
                raise ValidationFailedError(
                    f"handoffs: agent '{target}' (reached by a handoff) uses model "
                    f"'{target_model}', which is not among this tenant's allowed models.",
                    param="handoffs",
                    code="model_not_allowed",
                )
            pending.extend(reached.handoff_targets())
    if spec.upstream is not None:
        await require_upstream(session, tenant.id, spec.upstream)


def check_tool_urls(spec: AgentSpec, policy: EgressPolicy) -> None:
    """Every tenant tool's URL passes the egress guard's static check."""
    for index, tool in enumerate(spec.tools):
        if isinstance(tool, str):
            continue
        try:
            policy.check_url(tool.url)
        except EgressRefusedError as exc:
            raise ValidationFailedError(
                f"tools.{index}.url: {exc}", param=f"tools.{index}.url", code="url_not_allowed"
            ) from None
