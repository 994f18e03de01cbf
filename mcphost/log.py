"""Logging set-up (structlog, to stderr only) and the per-request record behind the one
canonical log line each request gets.

stdout is never written: in stdio mode it is the protocol channel. Standard-library
loggers (the SDK's, Hypercorn's) are routed through the same renderer, so every line on
stderr has one shape: JSON lines, or a readable console format on a terminal.
"""

from __future__ import annotations

import logging
import sys
import time
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any, Literal

import structlog

Format = Literal["auto", "json", "console"]


@dataclass(slots=True)
class RequestRecord:
    """Facts about one request, filled in by each layer it passes and logged once at the end."""

    request_id: str
    start: float = field(default_factory=time.perf_counter)
    method: str | None = None
    tool: str | None = None
    plugin: str | None = None
    status: str | None = None
    rpc_error: int | None = None

    def fields(self) -> dict[str, Any]:
        """The record as log fields, leaving out what was never set."""
        values = {
            "method": self.method,
            "tool": self.tool,
            "plugin": self.plugin,
            "tool_status": self.status,
            "rpc_error": self.rpc_error,
        }
        return {k: v for k, v in values.items() if v is not None}


current_request: ContextVar[RequestRecord | None] = ContextVar("mcphost_request", default=None)
"""The record of the request being served; the SDK carries it into the handler's task."""


def configure(level: str = "info", fmt: Format = "auto") -> None:
    """Send every log line (structlog's and the standard library's) to stderr."""
    if fmt == "auto":
        fmt = "console" if sys.stderr.isatty() else "json"
    renderer: Any = structlog.dev.ConsoleRenderer() if fmt == "console" else structlog.processors.JSONRenderer()
    shared: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    numeric = logging.getLevelName(level.upper())
    structlog.configure(
        processors=[*shared, structlog.processors.format_exc_info if fmt == "json" else _noop, renderer],
        wrapper_class=structlog.make_filtering_bound_logger(numeric),
        logger_factory=structlog.WriteLoggerFactory(sys.stderr),
        cache_logger_on_first_use=True,
    )
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, renderer],
            foreign_pre_chain=[*shared, structlog.stdlib.add_logger_name, structlog.processors.format_exc_info],
        )
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(numeric)
    # The SDK logs every session's creation at INFO; our own request line covers it.
    for chatty in ("mcp", "hypercorn.access"):
        logging.getLogger(chatty).setLevel(max(numeric, logging.WARNING))


def _noop(_logger: Any, _name: str, event: dict[str, Any]) -> dict[str, Any]:
    return event
