"""HTTP tools: the model's call becomes a signed `POST <url>` to the tenant's endpoint.

One pooled aiohttp session (behind the egress guard) serves every tool call of the process;
it is created lazily inside the serving loop and closed in the lifespan. A call:

1. parses the model's arguments and validates them against the tool's `parameters` schema
   (invalid: an `error: …` output, no request sent);
2. checks the URL again (the allow list may have changed since the PUT);
3. sends `{"tool", "arguments", "run_id", "agent", "tenant", "user"}` as JSON with
   `X-Gateway-Signature` (see `gateway.tools.signing`), no redirects followed, within the
   tool's `timeout_s`;
4. returns a 2xx body (at most `GATEWAY_TOOL_MAX_RESPONSE_BYTES`, else cut with a marker) as
   the tool output; anything else becomes an `error: …` output the model sees, and the run
   goes on.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

import aiohttp
import jsonschema
import orjson
from agents import FunctionTool, RunContextWrapper
from agents.tool_context import ToolContext
from aiohttp.abc import AbstractResolver
from referencing.exceptions import Unresolvable

from gateway.core.config import Settings
from gateway.core.egress import EgressPolicy, EgressRefusedError, guarded_session, refusal_of
from gateway.tools.context import context_of
from gateway.tools.secrets import ToolSecretCache
from gateway.tools.signing import signature_header
from observability.metrics import record_tool_call
from tenants.agent.json_schema import LOCAL_ONLY
from tenants.agent.tool_specs import HttpToolSpec

logger = logging.getLogger("gateway.tools.http")

ERROR_SNIPPET_CHARS = 500
USER_AGENT = "agent-gateway-tools/1"


class ToolCallFailed(Exception):
    """A call that ends in an `error: …` output; `status` is its metric label."""

    def __init__(self, status: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.output = f"error: {message}"


class HttpTools:
    """Builds the SDK tools of HTTP tool specs and performs their calls."""

    def __init__(self, settings: Settings, secrets: ToolSecretCache) -> None:
        self.policy = EgressPolicy.parse(settings.egress_allow)
        self.max_response_bytes = settings.tool_max_response_bytes
        self.secrets = secrets
        self.resolver: AbstractResolver | None = None
        """The DNS resolver of the pooled session (None: the system's `getaddrinfo`)."""
        self._session: aiohttp.ClientSession | None = None

    def session(self) -> aiohttp.ClientSession:
        """The pooled session, created on first use (inside the serving loop)."""
        if self._session is None or self._session.closed:
            self._session = guarded_session(self.policy, resolver=self.resolver)
        return self._session

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    def build(self, spec: HttpToolSpec) -> FunctionTool:
        """The SDK tool of one spec (built once per agent version, cached with it)."""
        validator_class = jsonschema.validators.validator_for(
            spec.parameters, default=jsonschema.Draft202012Validator
        )
        validator = validator_class(spec.parameters, registry=LOCAL_ONLY)

        async def invoke(context: ToolContext[Any], raw_arguments: str) -> str:
            return await self.call(spec, validator, context, raw_arguments)

        async def approval_needed(
            context: RunContextWrapper[Any], arguments: dict[str, Any], call_id: str
        ) -> bool:
            # A call whose arguments break `parameters` is never sent (the model gets the
            # `error: invalid arguments` output at once): nobody is asked to approve it.
            return bool(validator.is_valid(arguments))

        return FunctionTool(
            name=spec.name,
            description=spec.description or f"Calls the {spec.name} endpoint.",
            params_json_schema=spec.parameters,
            on_invoke_tool=invoke,
            strict_json_schema=False,
            needs_approval=approval_needed if spec.requires_approval else False,
        )

    async def call(
        self,
        spec: HttpToolSpec,
        validator: jsonschema.protocols.Validator,
        context: ToolContext[Any],
        raw_arguments: str,
    ) -> str:
        """One tool call: the endpoint's answer, or an `error: …` output."""
        started = time.perf_counter()
        try:
            output = await self._call(spec, validator, context, raw_arguments)
        except ToolCallFailed as failed:
            record_tool_call(spec.name, "http", failed.status, time.perf_counter() - started)
            return failed.output
        record_tool_call(spec.name, "http", "ok", time.perf_counter() - started)
        return output

    async def _call(
        self,
        spec: HttpToolSpec,
        validator: jsonschema.protocols.Validator,
        context: ToolContext[Any],
        raw_arguments: str,
    ) -> str:
        arguments = parse_arguments(validator, raw_arguments)
        run = context_of(context)
        try:
            self.policy.check_url(spec.url)
        except EgressRefusedError as exc:
            raise ToolCallFailed("refused", f"the tool URL is not allowed: {exc}") from None
        secrets = await self.secrets.for_tenant(run.tenant_id)
        if not secrets:
            raise ToolCallFailed(
                "error",
                "this tenant has no tool-signing secret yet (an admin creates one with "
                "POST /admin/tenants/{id}/tool-secret)",
            )
        body = orjson.dumps(
            {
                "tool": spec.name,
                "arguments": arguments,
                "run_id": run.run_id,
                "agent": run.agent,
                "tenant": run.tenant_id,
                "user": run.user,
            }
        )
        headers = {
            "Content-Type": "application/json",
            "User-Agent": USER_AGENT,
            "X-Gateway-Signature": signature_header(secrets, int(time.time()), body),
        }
        try:
            async with asyncio.timeout(spec.timeout_s):
                async with self.session().post(
                    spec.url, data=body, headers=headers, allow_redirects=False
                ) as response:
                    text = await self._read(response)
                    status = response.status
        except TimeoutError:
            raise ToolCallFailed(
                "timeout", f"the tool endpoint did not answer within {spec.timeout_s:g} s"
            ) from None
        except aiohttp.ClientError as exc:
            refusal = refusal_of(exc)
            if refusal is not None:
                raise ToolCallFailed("refused", f"the tool URL is not allowed: {refusal}") from None
            logger.info("tool %s unreachable (%s)", spec.name, type(exc).__name__)
            raise ToolCallFailed("unreachable", "the tool endpoint could not be reached") from None
        if not 200 <= status < 300:
            snippet = text[:ERROR_SNIPPET_CHARS]
            raise ToolCallFailed(
                "error",
                f"the tool endpoint answered HTTP {status}" + (f": {snippet}" if snippet else ""),
            )
        return text

    async def _read(self, response: aiohttp.ClientResponse) -> str:
        """The body, cut at `max_response_bytes` with a marker saying so."""
        limit = self.max_response_bytes
        chunks: list[bytes] = []
        size = 0
        async for chunk in response.content.iter_chunked(65_536):
            chunks.append(chunk)
            size += len(chunk)
            if size > limit:
                break
        data = b"".join(chunks)
        if size <= limit:
            return data.decode("utf-8", errors="replace")
        kept = data[:limit].decode("utf-8", errors="ignore")
        return f"{kept}\n[truncated: the response was longer than {limit} bytes]"


def parse_arguments(validator: jsonschema.protocols.Validator, raw_arguments: str) -> Any:
    """The model's arguments as JSON, valid against the tool's schema (else ToolCallFailed)."""
    try:
        arguments = orjson.loads(raw_arguments or "{}")
    except orjson.JSONDecodeError:
        raise ToolCallFailed("invalid_arguments", "the arguments are not valid JSON") from None
    try:
        error = jsonschema.exceptions.best_match(validator.iter_errors(arguments))
    except Unresolvable:  # a schema stored before the PUT check refused such references
        raise ToolCallFailed("invalid_schema", "the tool's schema has a broken $ref") from None
    if error is not None:
        where = "/".join(str(part) for part in error.absolute_path)
        message = f"{where}: {error.message}" if where else error.message
        raise ToolCallFailed("invalid_arguments", f"invalid arguments: {message}")
    return arguments
