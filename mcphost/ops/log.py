"""Logging set-up (structlog, to stderr only) and the per-request record behind the one
canonical log line each request gets.

stdout is never written: in stdio mode it is the protocol channel. Standard-library
loggers (the SDK's, Hypercorn's) are routed through the same renderer, so every line on
stderr has one shape: JSON lines, or a readable console format on a terminal. Secrets are
redacted from every line on the way out (:func:`redact`).

Lines go to a duplicate of stderr that the log keeps for itself (:class:`LogStream`): a
plugin that closes or replaces fd 2 (put back after its call: :mod:`mcphost.plugins.damage`)
cannot take the log with it, nor make a line written meanwhile raise into whatever wrote it.
"""

from __future__ import annotations

import logging
import os
import re
import sys
import time
from collections.abc import MutableMapping
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

import pydantic_core
import structlog

Format = Literal["auto", "json", "console"]


class Caller(Protocol):
    """Who a request is from, as far as a log line or a per-caller share needs to know
    (authentication makes it: :class:`mcphost.auth.identity.Identity`)."""

    @property
    def name(self) -> str:
        """The API key's name or the access token's subject; never a secret."""

    @property
    def key(self) -> str:
        """Unique across kinds of credential: what per-caller bookkeeping is keyed by."""


TOOL_STATUSES = (
    "ok",
    "error",
    "timeout",
    "too_large",
    "limited",
    "cancelled",
    "input_required",
    "invalid_arguments",
    "rate_limited",
    "denied",
)
"""How a tool call ends: :attr:`RequestRecord.status`, and the ``status`` label of the
``mcp_tool_calls_total`` metric (what :mod:`mcphost.protocol.handlers` records for a call,
plus ``denied``, a tool outside the caller's scopes)."""


@dataclass(slots=True)
class RequestRecord:
    """Facts about one request, filled in by each layer it passes and logged once at the end."""

    request_id: str
    session_id: str | None = None
    start: float = field(default_factory=time.perf_counter)
    method: str | None = None
    tool: str | None = None
    plugin: str | None = None
    status: str | None = None
    """How the tool call ended: one of :data:`TOOL_STATUSES`."""
    tool_ms: float | None = None
    """How long the tool call took, in milliseconds."""
    rpc_error: int | None = None
    identity: Caller | None = None
    """The authenticated caller; ``None`` when no authentication applies."""
    auth_error: str | None = None
    """Why the request's credentials were refused."""
    trace_id: str | None = None
    """The OpenTelemetry trace the request belongs to, when tracing is on (:mod:`mcphost.protocol.tracing`)."""

    def fields(self) -> dict[str, Any]:
        """The record as log fields, leaving out what was never set."""
        values = {
            "identity": None if self.identity is None else self.identity.name,
            "auth_error": self.auth_error,
            "method": self.method,
            "tool": self.tool,
            "plugin": self.plugin,
            "tool_status": self.status,
            "tool_ms": self.tool_ms,
            "rpc_error": self.rpc_error,
            "trace_id": self.trace_id,
        }
        return {k: v for k, v in values.items() if v is not None}


current_request: ContextVar[RequestRecord | None] = ContextVar("mcphost_request", default=None)
"""The record of the request being served; the SDK carries it into the handler's task."""


def current_caller() -> Caller | None:
    """The caller of the request being served, or ``None`` when no authentication applies."""
    record = current_request.get()
    return None if record is None else record.identity


def request_context(_logger: Any, _name: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    """A processor: every line logged while a request is served (by mcphost, the SDK or a
    plugin) names its ``request_id`` and ``session_id``. Read from the request's record, so
    serving a request binds nothing per request."""
    record = current_request.get()
    if record is not None:
        event.setdefault("request_id", record.request_id)
        if record.session_id is not None:
            event.setdefault("session_id", record.session_id)
    return event


def configure(level: str = "info", fmt: Format = "auto") -> None:
    """Send every log line (structlog's and the standard library's) to stderr."""
    if fmt == "auto":
        fmt = "console" if sys.stderr.isatty() else "json"
    renderer: Any = structlog.dev.ConsoleRenderer() if fmt == "console" else structlog.processors.JSONRenderer(_to_json)
    shared: list[Any] = [
        structlog.contextvars.merge_contextvars,
        request_context,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    numeric = logging.getLevelName(level.upper())
    stream = LogStream.of_stderr()
    structlog.configure(
        processors=[*shared, structlog.processors.format_exc_info if fmt == "json" else _noop, redact, renderer],
        wrapper_class=structlog.make_filtering_bound_logger(numeric),
        logger_factory=structlog.WriteLoggerFactory(stream),  # type: ignore[arg-type]
        cache_logger_on_first_use=True,
    )
    handler = logging.StreamHandler(stream)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, redact, renderer],
            foreign_pre_chain=[*shared, structlog.stdlib.add_logger_name, structlog.processors.format_exc_info],
        )
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(numeric)
    # The SDK logs every session's creation at INFO; our own request line covers it.
    for chatty in ("mcp", "hypercorn.access"):
        logging.getLogger(chatty).setLevel(max(numeric, logging.WARNING))


class LogStream:
    """Where log lines are written: a descriptor of stderr's own, duplicated once per process.

    Closing or replacing fd 2 leaves it writing where stderr was. A line that cannot be written
    at all (stderr's reader gone) is dropped, never raised: the code that logged, a request's or
    the daemon's own, must not fail for it, and there is nowhere left to report it but the
    count (:func:`dropped_lines`, a metric)."""

    _current: LogStream | None = None

    def __init__(self, fd: int):
        self.fd = fd
        self.dropped = 0
        """Lines dropped so far."""

    @classmethod
    def of_stderr(cls) -> LogStream:
        """This process's stream, duplicated from fd 2 on first use (not inherited by the
        processes it starts: a duplicate is close-on-exec; the fork server, whose children
        are the only processes forked, never sets up the log)."""
        if cls._current is None:
            cls._current = cls(os.dup(sys.stderr.fileno()))
        return cls._current

    def write(self, text: str) -> None:
        """Write ``text`` whole (a pipe may take it in parts), or drop it."""
        data = text.encode("utf-8", "backslashreplace")
        try:
            while data:
                data = data[os.write(self.fd, data) :]
        except OSError:
            self.dropped += 1

    def flush(self) -> None:
        """Nothing to do: :meth:`write` leaves nothing behind."""


def dropped_lines() -> int:
    """Log lines this process could not write to stderr (see :class:`LogStream`)."""
    return 0 if LogStream._current is None else LogStream._current.dropped


def _to_json(event: Any, default: Any) -> str:
    # pydantic-core's encoder: a fifth of json.dumps's time for a request line, and it writes
    # datetimes, enums and dataclasses as values where json.dumps would fall back to repr().
    return pydantic_core.to_json(event, fallback=default).decode()


def _noop(_logger: Any, _name: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    return event


_SECRET_FIELDS = frozenset({"authorization", "proxy-authorization", "cookie", "token", "access_token", "password"})
_SECRET = re.compile(
    r"(?i:bearer)\s+[^\s\"',;]+"  # an Authorization header's value
    r"|mcph_[A-Za-z0-9_-]{8,}"  # an API key (mcphost.auth.keys)
    r"|eyJ[A-Za-z0-9_-]{8,}(?:\.[A-Za-z0-9_-]*){0,2}"  # a JWT: base64url of '{"'
)


def _mask(match: re.Match[str]) -> str:
    text = match.group()
    if text.startswith("mcph_"):
        return "mcph_[redacted]"
    return "Bearer [redacted]" if text[:1] in "bB" else "[redacted]"


# What every secret _SECRET matches starts with. Most values hold none, and one search for
# these costs far less than the substitution.
_MARKER = re.compile(r"(?i:bearer)|mcph_|eyJ")
_CONTAINERS = (dict, list, tuple)


def _scrub(value: Any, depth: int = 0) -> Any:
    if isinstance(value, str):
        return _SECRET.sub(_mask, value) if _MARKER.search(value) is not None else value
    if depth > 4:
        return value
    if isinstance(value, dict):
        return {k: "[redacted]" if str(k).lower() in _SECRET_FIELDS else _scrub(v, depth + 1) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return type(value)(_scrub(v, depth + 1) for v in value)
    return value


def redact(_logger: Any, _name: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    """A structlog processor: masks Authorization values, API keys and JWTs wherever they
    appear in a log line (a misbehaving client may put one in any header we log)."""
    for key, value in event.items():
        if key in _SECRET_FIELDS:
            event[key] = "[redacted]"
        elif isinstance(value, str):
            # Inline, not through _scrub: every line has a dozen plain strings.
            if _MARKER.search(value) is not None:
                event[key] = _SECRET.sub(_mask, value)
        elif isinstance(value, _CONTAINERS):
            event[key] = _scrub(value)
    return event
