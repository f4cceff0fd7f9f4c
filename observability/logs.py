"""JSON log lines through the standard `logging` module.

One JSON object per line on stderr: `ts`, `level`, `logger`, `msg`, `pid`, `request_id` (when
the line was written while serving a request) and any `extra={...}` fields. `logging_config()`
is the `dictConfig` the CLI hands to uvicorn, so every worker process configures itself the
same way; uvicorn's own access log is off (the gateway writes one access line per request,
see `observability.middleware`).
"""

from __future__ import annotations

import json
import logging
import logging.config
import re
from datetime import UTC, datetime
from typing import Any

import orjson

from observability.context import current_request_id

# Attributes every LogRecord has; anything else on a record came from `extra=`.
_STANDARD = frozenset(
    vars(logging.LogRecord("", 0, "", 0, "", None, None)).keys()
    | {"message", "asctime", "color_message"}
)


class RequestIdFilter(logging.Filter):
    """Stamps each record with the id of the request being served (or None)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if not hasattr(record, "request_id"):
            record.request_id = current_request_id()
        return True


class NoQueryStrings(logging.Filter):
    """uvicorn logs a WebSocket handshake with the request's path and query string (`"WebSocket
    /v1/agents/a/ws?api_key=…" 401`), where a client may have put a credential: the query is
    cut from every path uvicorn's server logger is handed, and a key or JWT a client put in
    the path itself (`/v1/agents/gw_…/ws`) is masked."""

    def filter(self, record: logging.LogRecord) -> bool:
        args = record.args
        if isinstance(args, tuple) and any(_is_path(arg) for arg in args):
            record.args = tuple(_scrubbed(arg) for arg in args)
        return True


_CREDENTIAL = re.compile(r"gw_[0-9A-Za-z]{38}|eyJ[\w-]*\.[\w-]*\.[\w-]*")
"""An API key (`gw_` + 38 base62 characters) or a JWT (three base64url parts)."""


def _is_path(value: object) -> bool:
    return isinstance(value, str) and value.startswith("/")


def _scrubbed(value: object) -> object:
    if not isinstance(value, str) or not _is_path(value):
        return value
    if "?" in value:
        value = value.split("?", 1)[0] + "?…"
    return _CREDENTIAL.sub("…", value)


class JsonFormatter(logging.Formatter):
    """Formats a record as one JSON object (no newlines inside).

    An API key or a JWT in a message or a traceback (a library quoting a header it could not
    parse, say) is masked; text orjson cannot write (a lone surrogate: a byte that was not
    UTF-8, decoded with `surrogateescape`) is written escaped, never as a "Logging error" dump
    of the raw record on stderr.

    A line carries neither the caller's file and line nor thread or process names, so a
    process that formats with it stops collecting them for every record (the "Optimization"
    switches of the logging documentation): no stack walk per line (`logging._srcfile`)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        logging._srcfile = None
        logging.logThreads = False
        logging.logMultiprocessing = False

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": _masked(record.getMessage()),
            "pid": record.process,
        }
        for key, value in record.__dict__.items():
            if key not in _STANDARD:
                line[key] = value
        if record.exc_info:
            line["exc"] = _masked(self.formatException(record.exc_info))
        try:
            return orjson.dumps(line, default=str).decode()
        except TypeError:  # orjson.JSONEncodeError: a lone surrogate
            return json.dumps(line, default=str, ensure_ascii=True)


def _masked(text: str) -> str:
    if "gw_" in text or "eyJ" in text:
        return _CREDENTIAL.sub("…", text)
    return text


def logging_config(level: str = "info") -> dict[str, Any]:
    """The `logging.config.dictConfig` of a gateway process: JSON lines on stderr."""
    handler = {
        "class": "logging.StreamHandler",
        "stream": "ext://sys.stderr",
        "formatter": "json",
        "filters": ["request_id"],
    }
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "filters": {
            "request_id": {"()": RequestIdFilter},
            "no_query_strings": {"()": NoQueryStrings},
        },
        "formatters": {"json": {"()": JsonFormatter}},
        "handlers": {"stderr": handler},
        "root": {"handlers": ["stderr"], "level": level.upper()},
        "loggers": {
            # uvicorn's loggers propagate to the root handler: one format for everything.
            "uvicorn": {"handlers": [], "propagate": True, "level": "INFO"},
            "uvicorn.error": {
                "handlers": [],
                "propagate": True,
                "level": "INFO",
                "filters": ["no_query_strings"],
            },
            "uvicorn.access": {"handlers": [], "propagate": False, "level": "WARNING"},
            # Third-party debug output could carry prompts or headers: keep it at warning.
            # The HTTP clients' info lines name each request's URL, and a tenant's MCP server
            # or upstream may take its credential in the URL (`HTTP Request: POST <url>`).
            "httpx": {"level": "WARNING"},
            "httpcore": {"level": "WARNING"},
            "httpx2": {"level": "WARNING"},
            "httpcore2": {"level": "WARNING"},
            # The MCP client logs a server's broken answer with its URL and the start of its
            # body (tenant data): the run reports the failure itself (a tool output `error:`,
            # `gateway_tool_calls_total`), so only its critical lines are kept.
            "mcp": {"level": "CRITICAL"},
            "openai": {"level": "WARNING"},
            "openai.agents": {"level": "WARNING"},
            "aiosqlite": {"level": "WARNING"},
            "asyncio": {"level": "WARNING"},
        },
    }


def configure_logging(level: str = "info") -> None:
    """Configure this process's logging as JSON lines (for processes uvicorn does not start)."""
    logging.config.dictConfig(logging_config(level))
