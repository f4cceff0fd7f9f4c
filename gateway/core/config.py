"""Settings: one `Settings` object read once from the environment (prefix `GATEWAY_`).

The standard OpenAI variables (`OPENAI_API_KEY`, `OPENAI_BASE_URL`) are read here too, so that
the real OpenAI path works unchanged when they are set. Nothing else in the code base reads
the environment.
"""

from __future__ import annotations

import ipaddress
import re
from functools import lru_cache
from typing import Annotated, Any, Literal

from fastapi import Depends, Request
from pydantic import AliasChoices, Field, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict
from pydantic_settings import SettingsError as SourceError

from gateway.core.state import app_state

DEV_SECRET_KEY = "dev-insecure-secret-key-change-me-0000000000"  # noqa: S105 (refused outside dev)
_PLACEHOLDERS = {"", "changeme", "change-me", "secret", DEV_SECRET_KEY}


class Settings(BaseSettings):
    """Every setting of the gateway. Field names map to `GATEWAY_<NAME>` variables."""

    model_config = SettingsConfigDict(
        env_prefix="GATEWAY_",
        extra="ignore",
        use_attribute_docstrings=True,
        # `inf` and `nan` pass `gt=0`-style bounds and fail later (an infinite timeout is a
        # 500 on every run, an infinite TTL a crash at start): no setting takes them.
        allow_inf_nan=False,
    )

    env: Literal["development", "production", "test"] = "development"
    """`development` allows placeholder secrets; anything else refuses them at start-up."""

    database_url: str = "sqlite+aiosqlite:///./gateway.db"
    """SQLAlchemy async URL: SQLite by default, `postgresql+asyncpg://…` in production."""

    database_connect_timeout_s: float = Field(default=2.0, gt=0, le=60)
    """Upper bound on opening a PostgreSQL connection (a server that does not answer counts as
    unavailable: 503 with Retry-After)."""

    database_pool_timeout_s: float = Field(default=2.0, gt=0, le=60)
    """Upper bound on waiting for a free pooled connection."""

    database_statement_timeout_s: float = Field(default=5.0, gt=0, le=600)
    """Upper bound on one statement: the server cancels it a little before, and the client
    gives up on a server that stopped answering at all."""

    database_retry_s: float = Field(default=1.0, gt=0, le=60)
    """After the database was found unavailable, requests that need it get 503 at once for
    this long (then one of them tries again), instead of each waiting for its timeout."""

    redis_url: str | None = None
    """Redis shared by all replicas (limits, quotas, leases, invalidation). Unset: in-memory."""

    redis_timeout_ms: int = Field(default=100, ge=5, le=5_000)
    """Upper bound of every Redis call; a slower Redis counts as unavailable."""

    redis_max_connections: int = Field(default=200, ge=1)
    """Connection pool size of the process Redis client."""

    redis_key_prefix: str = Field(default="gw:", max_length=64)
    """Prefix of every Redis key and channel the gateway uses (several deployments can share
    one Redis)."""

    limits_failure_mode: Literal["open", "closed"] = "open"
    """Limit checks while Redis is unavailable: `open` falls back to per-replica memory (logged,
    counted in `gateway_limits_degraded_total`); `closed` answers 503 with Retry-After."""

    limits_redis_retry_s: float = Field(default=1.0, gt=0, le=5.0)
    """After a failed Redis call, limit checks skip Redis this long before trying it again (so
    enforcement in Redis resumes within this bound once Redis is back)."""

    limits_budget_recount_s: float = Field(default=60.0, ge=0, le=86_400)
    """How often each replica counts every budgeted tenant's usage today and this month (the
    usage records) in its `tokens_per_day` and spend windows again, so windows that lost their
    counts (a Redis restart or failover; a replica's restart without Redis) hold the records'
    totals within this bound rather than starting from zero. Never lowers a window. 0: never.
    """

    limits_lease_ttl_s: float = Field(default=30.0, gt=0, le=3600)
    """TTL of concurrency leases, token reservations and conversation locks. A replica renews
    those of its runs in flight every third of it (and a run's lease at every model call), so a
    run may last longer; a replica that dies (SIGKILL, a crash) renews nothing, so its runs
    stop counting, and its conversations are free again, after at most this. Shorter frees a
    dead replica's slots sooner; a replica whose renewals fail for two thirds of it (Redis
    unreachable, an event loop stalled) may lose its runs' leases."""

    limits_default_max_output_tokens: int = Field(default=4096, ge=1)
    """Output tokens reserved for a model call whose agent sets no `max_tokens`."""

    limits_requests_per_minute_ceiling: int = Field(default=60_000, ge=1, le=10_000_000)
    """The request limit of a tenant whose `requests_per_minute` is null: a deployment-wide
    safety cap (about 1,000 requests a second), so every tenant's `/v1` responses carry the
    `x-ratelimit-*-requests` headers. A tenant's own limit, however high, replaces it."""

    default_tenant_limits: dict[str, Any] = Field(default_factory=dict)
    """The `limits` a new tenant starts with, for every field its `POST /admin/tenants` body
    (or `gateway tenants create`) leaves out: a JSON object of those fields, e.g.
    `{"requests_per_minute": 600, "max_concurrent_runs": 20}` (checked at start-up). Unset:
    a new tenant is unlimited until an admin sets its limits."""

    prices_refresh_s: float = Field(default=5.0, gt=0)
    """How often each replica reloads the model price table for spend reservations: a price
    change reaches `spend_per_day_usd` / `spend_per_month_usd` within this bound (usage
    records are priced from the table itself, exactly)."""

    secret_key: str = DEV_SECRET_KEY
    """Keys the HMAC under which API keys are stored, signs admin JWTs and encrypts stored
    secrets. At least 32 characters outside dev."""

    secret_key_old: str = ""
    """Previous `GATEWAY_SECRET_KEY`s during a rotation (comma-separated, newest first): API
    keys, admin JWTs and stored secrets made under them are still accepted (an API key's HMAC
    is rewritten under the current key at its first use). Remove them once `gateway secrets
    re-encrypt` ran and the keys still in use were presented once (docs/operations.md)."""

    admin_token: str | None = None
    """Bootstrap admin bearer token. Required outside development."""

    jwt_audience: str = Field(default="agent-gateway", min_length=1, max_length=200)
    """The `aud` every end-user JWT must carry (tenant JWTs, never admin tokens)."""

    admin_jwt_ttl_s: int = Field(default=900, ge=60, le=86_400)
    """Lifetime of the admin JWT issued by `POST /admin/login`."""

    auth_failure_limit: int = Field(default=300, ge=1)
    """Failed tenant authentications (bad API keys, bad JWTs) allowed per client address per
    window; beyond it the address gets 429 before any database look-up. Keys (190 random bits)
    and JWT signatures cannot be guessed: the limit protects the database from look-ups of
    made-up keys, and is high enough that one misbehaving client does not lock out a tenant
    whose backends share its address. An API key the replica resolved in the last 15 minutes
    keeps working from a blocked address (its look-up is not a guess); JWTs do not."""

    admin_auth_failure_limit: int = Field(default=20, ge=1)
    """Failed admin authentications (bad logins, wrong admin bearer tokens) allowed per client
    address per window: a password can be guessed, so this budget is small."""

    auth_failure_window_s: int = Field(default=60, ge=1, le=3_600)
    """The window of `auth_failure_limit`, in seconds."""

    forwarded_allow_ips: str = Field(default="127.0.0.1", max_length=4096)
    """Peers trusted to set `X-Forwarded-For` / `X-Forwarded-Proto` (comma-separated IPs or
    CIDRs, `*` for any): behind a load balancer, its addresses, so the client address (auth
    failure limit, access log) is the real client's. Anyone else's header is ignored."""

    cors_allow_origins: str = Field(default="", max_length=4096)
    """Browser origins allowed to call the API cross-origin (comma-separated, e.g.
    `https://app.example.com`; `*` for any): CORS preflights are answered and responses carry
    `Access-Control-Allow-Origin` and expose the `x-ratelimit-*`, `Retry-After` and
    `X-Request-ID` headers. Credentials go in `Authorization` / `X-API-Key`, never cookies.
    Empty (the default): no CORS headers, browsers on other origins are refused."""

    max_body_bytes: int = Field(default=1024 * 1024, ge=1024)
    """Request bodies above this size get 413, whatever their framing (`Content-Length` or
    chunked)."""

    allocator: Literal["auto", "jemalloc", "system"] = "auto"
    """Memory allocator of `gateway serve` / `gateway demo`: `auto` preloads jemalloc when
    libjemalloc2 is installed, else keeps glibc with `MALLOC_ARENA_MAX=2` and a periodic
    `malloc_trim`; `jemalloc` requires it; `system` changes nothing. (glibc alone keeps
    about 11-20 KB per WebSocket opened and closed.)"""

    malloc_trim_interval_s: float | None = Field(default=None, ge=0)
    """Seconds between two `malloc_trim(0)` of a glibc process (0: never; unset: 10 s under
    `GATEWAY_ALLOCATOR=auto` without jemalloc, else never)."""

    max_json_depth: int = Field(default=64, ge=2, le=1000)
    """JSON bodies (and WebSocket frames) nested deeper than this (arrays and objects) get 422
    `invalid_json`."""

    max_header_bytes: int = Field(default=64 * 1024, ge=4096, le=16 * 1024 * 1024)
    """A request line and headers larger than this in total get 431 (under `gateway serve`,
    before the request is parsed further or reaches the app)."""

    conversation_max_items: int = Field(default=1000, ge=2, le=100_000)
    """A server-side conversation holding this many items takes no further turn (400
    `conversation_too_long`): every turn sends the whole history to the model. A turn's input
    must fit; its answer is stored whole (it may end a few items past the limit)."""

    principal_cache_ttl_s: float = Field(default=2.0, gt=0, le=5.0)
    """How long a resolved credential (and agent spec) is trusted without a DB look-up."""

    principal_cache_stale_s: float = Field(default=60.0, ge=0, le=600)
    """How long past its TTL a cached credential (and agent spec) is still used when the
    database is unavailable, so runs keep being served through a short outage (0: never). An
    invalidation (revocation, suspension, agent change) drops the entry at once regardless."""

    principal_cache_size: int = Field(default=10_000, ge=1)
    """Upper bound on cached credentials per process."""

    openai_api_key: str | None = Field(
        default=None, validation_alias=AliasChoices("OPENAI_API_KEY", "GATEWAY_OPENAI_API_KEY")
    )
    """Upstream API key (standard OpenAI variable). Unset in dev: the mock LLM is the upstream."""

    openai_base_url: str | None = Field(
        default=None, validation_alias=AliasChoices("OPENAI_BASE_URL", "GATEWAY_OPENAI_BASE_URL")
    )
    """Upstream base URL (standard OpenAI variable); any OpenAI-compatible server. Unset (or
    empty): OpenAI's."""

    mock_llm_url: str | None = None
    """Base URL of a mock LLM (`gateway mock-llm`) to use as the upstream while
    `OPENAI_API_KEY` is unset, in any environment (the compose file's `mock-llm` service).
    Ignored once `OPENAI_API_KEY` or `OPENAI_BASE_URL` is set: a real key then goes to OpenAI
    (or to `OPENAI_BASE_URL`), never to the mock."""

    upstream_api: Literal["responses", "chat_completions"] = "responses"
    """Which upstream API the Agents SDK speaks."""

    upstream_timeout_s: float = Field(default=60.0, gt=0)
    """Timeout of one HTTP attempt of a model call (connect, and each read of a stream);
    exceeding it answers 504 `upstream_timeout` once the retries are spent. A model call
    takes at most `(1 + GATEWAY_UPSTREAM_MAX_RETRIES)` attempts plus the client's backoff
    between them (0.5 s doubling up to 8 s, or the upstream's `Retry-After` up to 120 s);
    `GATEWAY_RUN_TIMEOUT_S` bounds the whole run."""

    run_timeout_s: float = Field(default=600.0, gt=0)
    """Overall deadline of one run: every model call, retry and tool call in it. Past it the
    run stops with 504 `run_timeout` (`run.failed` with that code when streaming), the tokens
    already spent recorded."""

    upstream_max_retries: int = Field(default=2, ge=0, le=10)
    """Retries of a failed model call (429/5xx/connection) before 502."""

    upstream_client: Literal["lean", "openai"] = "lean"
    """Client of model calls: `lean` (one pooled aiohttp session, orjson, responses parsed by
    pydantic-core; same requests, retries and errors as the stock client, at less CPU per
    call) or `openai` (the stock `AsyncOpenAI` client)."""

    upstream_http_client: Literal["aiohttp", "httpx"] = "aiohttp"
    """Transport of the stock AsyncOpenAI clients (`GATEWAY_UPSTREAM_CLIENT=openai`); aiohttp
    costs less CPU per call."""

    egress_allow: str = Field(default="", max_length=4096)
    """Hosts and CIDRs (comma-separated, e.g. `127.0.0.0/8,tools.internal`) that HTTP tools, MCP
    servers and tenant upstreams may reach although they are private, loopback or link-local,
    and over plain `http`. Empty: only public addresses over `https`."""

    tool_max_response_bytes: int = Field(default=65_536, ge=1_024, le=10 * 1024 * 1024)
    """An HTTP tool's answer, or an MCP tool call's result, longer than this is cut (with a
    marker saying so) before the model sees it."""

    run_state_ttl_s: float = Field(default=86_400.0, gt=0, le=30 * 86_400)
    """How long a run paused for approval waits for its decisions; after that it expires
    (404) and its conversation is free again."""

    default_model: str = "gpt-4.1-mini"
    """Model of an agent spec that names none."""

    stream_keepalive_s: float = Field(default=10.0, gt=0, le=14)
    """Seconds of silence after which a stream (SSE, Chat Completions) gets a keep-alive
    comment. At most 14, so that a comment comes at least every 15 s with the time it takes
    to write one."""

    stream_disconnect_grace_s: float = Field(default=30.0, ge=0, le=600)
    """When a streaming client (SSE, Chat Completions stream, WebSocket) leaves while a model
    call is in flight (the upstream has it, answering yet or not), that call is still read for
    up to this long so that its usage (reported at its end) is recorded; the run's concurrency
    slot is held meanwhile. Past it, or with 0, the call is cut and its tokens are unknown (0 in
    the record)."""

    drain_delay_s: float | None = Field(default=None, ge=0, le=300)
    """On SIGTERM, how long a replica keeps accepting connections after `/readyz` turned 503,
    so that the load balancer stops sending before the listener closes. Unset: 5 s when
    `GATEWAY_ENV=production`, else 0 (SIGINT never waits)."""

    shutdown_grace_s: float = Field(default=30.0, ge=0, le=3_600)
    """On SIGTERM, how long in-flight runs, streams and WebSocket turns may go on once the
    listener closed; those still open then end with `run.failed` code `shutting_down`
    (WebSocket close 1012; a plain run answers 503). Keep the orchestrator's kill timeout above
    the drain delay plus this (plus a few seconds)."""

    usage_flush_interval_s: float = Field(default=0.5, gt=0)
    """How often the usage writer flushes its batch."""

    usage_batch_size: int = Field(default=200, ge=1)
    """Records per INSERT batch."""

    usage_queue_size: int = Field(default=10_000, ge=1)
    """Bounded write-behind queue; a full queue makes runs wait (never drops a record)."""

    usage_room_timeout_s: float = Field(default=2.0, gt=0, le=60)
    """How long a new run waits for room in a full usage queue before 503 `usage_backlog`
    (with Retry-After)."""

    usage_spill_path: str = "gateway-usage-spill.ndjson"
    """Local JSON-lines file for usage records that could not reach the database by shutdown
    (and for records that find the queue full). Every start replays it, once the database
    answers; a run id already stored is skipped, so nothing is counted twice. Processes of one
    host may share it. Beside it, each process journals the records it has not yet written
    (`<path>.journal-*`), so a killed process (SIGKILL, OOM) loses none: the next process on
    the path adopts a dead one's journal within 5 s and replays it. Empty: no spill file and no
    journal: a record that finds the queue full is then kept in memory over the bound rather
    than dropped, and records left at shutdown are only logged."""

    usage_shutdown_flush_s: float = Field(default=5.0, ge=0, le=120)
    """At shutdown, how long the usage writer keeps trying the database before it spills the
    remaining records to `usage_spill_path`."""

    usage_dead_letter_path: str = "gateway-usage-dead-letters.ndjson"
    """JSON-lines file for usage records the database refused, used only when it refuses their
    row in the `usage_dead_letters` table too (empty: log them instead)."""

    usage_raw_retention_days: int | None = Field(default=None, ge=1)
    """Keep raw usage records this many days (None: keep them all). On PostgreSQL `gateway
    usage maintain` drops each monthly partition once all of its days are older; rollups (the
    reports) are kept. SQLite keeps one table and applies no retention."""

    usage_partitions_ahead: int = Field(default=2, ge=0, le=24)
    """Monthly partitions `gateway usage maintain` creates beyond the current month
    (PostgreSQL). The writer also creates a missing month's partition before writing to it."""

    tracing_export: bool = False
    """Upload Agents SDK traces to OpenAI (off: only the gateway's own processor runs)."""

    demo_api_key: str | None = None
    """`make run` seeds the demo tenant with this key when set."""

    gc_gen0_threshold: int = Field(default=50_000, ge=0)
    """Generation-0 threshold of Python's cycle collector in each worker (0: Python's default).

    The SDK allocates many short-lived objects per run; with the default (700) collections ran
    often enough to cost about a tenth of the CPU under load. Start-up objects are also frozen
    out of the collector's view."""

    sdk_run_cache: bool = True
    """Compute once per built agent graph what the Agents SDK otherwise recomputes on every
    run (its agent identity keys), check concurrent runs' tool configurations without
    per-run generators (`gateway.agents.sdk_cache`), and gather no-op hooks and single
    coroutines without a task each (`gateway.agents.sdk_gather`); false leaves the SDK
    untouched."""

    metrics_enabled: bool = True
    """Expose `/metrics`."""

    metrics_token: str | None = None
    """When set, `/metrics` requires `Authorization: Bearer <token>` (401 otherwise)."""

    metrics_max_tenants: int = Field(default=500, ge=1)
    """Distinct `tenant` label values per worker; further tenants are counted as `_other`
    (a value no slug can take)."""

    metrics_dir: str | None = None
    """Parent of the per-instance prometheus_client multiprocess directories used by
    `gateway serve --workers N>1` (default: the system temp dir)."""

    log_level: Literal["debug", "info", "warning", "error"] = "info"
    """Level of the JSON log lines on stderr (`debug` adds one line per Agents SDK span)."""

    log_prompts: bool = False
    """Put prompt and model output text into debug span log lines (off: never logged)."""

    otlp_endpoint: str | None = None
    """OTLP/HTTP traces endpoint (e.g. `http://collector:4318/v1/traces`); needs the `otlp`
    extra. Unset: no export."""

    @field_validator("redis_url")
    @classmethod
    def _redis_scheme(cls, value: str | None) -> str | None:
        if not value:  # empty: unset (in-memory limits), as it always was
            return None
        if value.partition("://")[0] not in ("redis", "rediss", "unix"):
            raise ValueError("must be a redis://, rediss:// or unix:// URL")
        from redis.connection import parse_url  # what the client will read it with

        try:
            parse_url(value)  # type: ignore[no-untyped-call]
        except ValueError as exc:  # the reason names a part (the port), never the password
            raise ValueError(f"not a usable Redis URL: {exc}") from None
        return value

    @field_validator("admin_token")
    @classmethod
    def _trimmed_token(cls, value: str | None) -> str | None:
        # A token read from a file often ends with a newline: kept, no admin call would match.
        return None if value is None else value.strip()

    @field_validator("database_url")
    @classmethod
    def _async_driver(cls, value: str) -> str:
        scheme = value.partition("://")[0].lower()
        if not scheme.startswith("sqlite") and scheme != "postgresql+asyncpg":
            raise ValueError(
                "use sqlite+aiosqlite://… or postgresql+asyncpg://… (the async drivers the "
                "gateway ships)"
            )
        return value

    @field_validator("egress_allow")
    @classmethod
    def _valid_egress_allow(cls, value: str) -> str:
        for entry in (part.strip() for part in value.split(",")):
            if "/" in entry:
                ipaddress.ip_network(entry.strip("[]"), strict=False)  # ValueError: refused
        return value

    @model_validator(mode="after")
    def _refuse_placeholder_secrets(self) -> Settings:
        if self.env == "development":
            return self
        if self.secret_key in _PLACEHOLDERS or len(self.secret_key) < 32:
            raise ValueError("GATEWAY_SECRET_KEY must be a real secret of at least 32 characters")
        if any(key in _PLACEHOLDERS or len(key) < 32 for key in self.old_secret_keys):
            raise ValueError("every GATEWAY_SECRET_KEY_OLD key must be at least 32 characters")
        if self.env == "production" and (
            not self.admin_token or self.admin_token in _PLACEHOLDERS or len(self.admin_token) < 24
        ):
            raise ValueError("GATEWAY_ADMIN_TOKEN must be set to at least 24 characters")
        # The example Secret's placeholders (deploy/k8s/secret.example.yaml): an empty value
        # is unset, a placeholder a mistake to stop at.
        for name, value in (
            ("GATEWAY_METRICS_TOKEN", self.metrics_token),
            ("OPENAI_API_KEY", self.openai_api_key),
        ):
            if value and value.strip().lower() in _PLACEHOLDERS:
                raise ValueError(f"{name} is a placeholder: set a real value, or unset it")
        return self

    @property
    def uses_mock_upstream(self) -> bool:
        """True when no upstream key is configured (the built-in mock LLM serves)."""
        return not self.openai_api_key

    @property
    def upstream_base_url(self) -> str | None:
        """The deployment's upstream: `OPENAI_BASE_URL`; without it, `GATEWAY_MOCK_LLM_URL`
        while no key is set; else None (OpenAI's). An empty variable counts as unset."""
        if self.openai_base_url:
            return self.openai_base_url
        return (self.mock_llm_url or None) if self.uses_mock_upstream else None

    @property
    def old_secret_keys(self) -> tuple[str, ...]:
        """`secret_key_old` as a tuple (newest first)."""
        return tuple(k.strip() for k in self.secret_key_old.split(",") if k.strip())

    @property
    def secret_keys(self) -> tuple[str, ...]:
        """The current secret key, then the old ones still accepted."""
        return (self.secret_key, *self.old_secret_keys)

    @property
    def drain_delay(self) -> float:
        """`drain_delay_s` with its environment-dependent default."""
        if self.drain_delay_s is not None:
            return self.drain_delay_s
        return 5.0 if self.env == "production" else 0.0

    @property
    def is_sqlite(self) -> bool:
        return self.database_url.startswith("sqlite")


class SettingsError(ValueError):
    """Invalid settings, described by name and rule only: a value (a secret key, the admin
    token, a database password) is never echoed into a start-up log."""


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process-wide settings, read once (SettingsError when they are invalid)."""
    try:
        return Settings()
    except ValidationError as exc:
        raise settings_error(exc) from None
    except SourceError as exc:  # a value that had to be JSON and is not (its text not shown)
        field = re.search(r'field "(\w+)"', str(exc))
        name = f"GATEWAY_{field.group(1).upper()}" if field else str(exc)
        raise SettingsError(f"invalid settings: {name}: it must be JSON") from None


def settings_error(exc: ValidationError, setting: str = "") -> SettingsError:
    """`exc` as a SettingsError naming each setting (by its variable, as the docs list it)
    and rule, never an input value. `setting`: the variable `exc` is about, if one."""

    def where(loc: tuple[int | str, ...]) -> str:
        parts = [str(part) for part in loc]
        if not setting and parts and parts[0] in Settings.model_fields:
            field = Settings.model_fields[parts[0]]
            if field.validation_alias is None:
                parts[0] = f"GATEWAY_{parts[0].upper()}"
        return ".".join(parts) or "settings"

    problems = "; ".join(
        f"{where(error['loc'])}: {error['msg']}"
        for error in exc.errors(include_input=False, include_url=False, include_context=False)
    )
    return SettingsError(f"invalid settings: {setting + ': ' if setting else ''}{problems}")


def settings_of(request: Request) -> Settings:
    """The settings the running app was built with (tests build apps with their own)."""
    return app_state(request).settings


async def _settings_dependency(request: Request) -> Settings:
    # Async on purpose: FastAPI runs plain `def` dependencies in a thread pool.
    return settings_of(request)


SettingsDep = Annotated[Settings, Depends(_settings_dependency)]
