"""OpenTelemetry tracing (``[tracing]``): a span per MCP message and a child span per tool call.

The SDK already wraps every inbound message in a SERVER span (``tools/call echo_add``, with
``mcp.method.name``, ``mcp.protocol.version``, ``jsonrpc.request.id``, ``gen_ai.tool.name``
and the JSON-RPC error code), parented to the trace context a client put in ``params._meta``
(SEP-414). It is a no-op until a tracer provider is installed, which is all that
:func:`setup` does for it. mcphost adds what the SDK cannot know:

- the W3C ``traceparent`` header as the parent when ``_meta`` carries none (:meth:`Tracing.enter`
  attaches it in the HTTP request's task; the SDK carries contextvars into the handler's task);
- ``mcp.session.id`` on the SDK's span, and its trace id on the request's log record
  (:meth:`Tracing.annotate`, a server middleware);
- an ``execute_tool <name>`` INTERNAL span around each tool call, with the plugin and how the
  call ended (:meth:`Tracing.tool_span`).

With ``exporter = "none"`` (the default) nothing here is installed: the request path checks
one attribute for ``None``, and the OpenTelemetry SDK is not even imported.
"""

from __future__ import annotations

import os
import socket
import sys
import uuid
from collections.abc import Mapping
from typing import IO, TYPE_CHECKING, Any

from mcp.server.context import CallNext, HandlerResult, ServerRequestContext
from opentelemetry import context, propagate, trace
from opentelemetry.trace import SpanKind, StatusCode, format_trace_id

from mcphost.core.config import ConfigError, LoadedConfig, TracingConfig
from mcphost.ops.log import RequestRecord, current_request
from mcphost.ops.metrics import FAILED
from mcphost.plugins.context import connection_of

if TYPE_CHECKING:
    from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
    from opentelemetry.sdk.trace.export import SpanExporter

    from mcphost.plugins.registry import RegisteredTool

EXPORT_TIMEOUT = 5.0
"""Seconds an OTLP export may take; bounds how long shutdown waits for a collector that is gone."""


class ToolSpan:
    """The span of one tool call, current while the call runs (spans the plugin makes nest in it)."""

    __slots__ = ("span", "token")

    def __init__(self, span: trace.Span):
        self.span = span
        self.token = context.attach(trace.set_span_in_context(span))

    def end(self, status: str) -> None:
        """Record how the call ended (the statuses of :mod:`mcphost.protocol.handlers`) and close the span."""
        span = self.span
        span.set_attribute("mcphost.tool.status", status)
        if status in FAILED:
            # "tool_error" as the SDK marks the request's span for an isError result.
            span.set_attribute("error.type", "tool_error" if status == "error" else status)
            span.set_status(StatusCode.ERROR)
        context.detach(self.token)
        span.end()


class Tracing:
    """The installed tracer provider and what mcphost adds to the SDK's spans."""

    def __init__(self, provider: TracerProvider, version: str):
        self.provider = provider
        self.tracer = provider.get_tracer("mcphost", version)

    def enter(self, headers: Mapping[bytes, bytes], record: RequestRecord) -> object | None:
        """Make a valid ``traceparent`` header the current context of the HTTP request; the
        token to :meth:`leave` with, or ``None`` when there is none."""
        value = headers.get(b"traceparent")
        if value is None:
            return None
        carrier = {"traceparent": value.decode("latin-1")}
        if (state := headers.get(b"tracestate")) is not None:
            carrier["tracestate"] = state.decode("latin-1")
        parent = propagate.extract(carrier)
        span_context = trace.get_current_span(parent).get_span_context()
        if not span_context.is_valid:
            return None
        record.trace_id = format_trace_id(span_context.trace_id)  # even if the request is refused
        return context.attach(parent)

    @staticmethod
    def leave(token: object) -> None:
        """Undo :meth:`enter`."""
        context.detach(token)  # type: ignore[arg-type]

    @staticmethod
    async def annotate(ctx: ServerRequestContext[Any, Any], call_next: CallNext) -> HandlerResult:
        """Server middleware inside the SDK's span: the session id on the span, the trace id on the log record."""
        span = trace.get_current_span()
        span_context = span.get_span_context()
        if span_context.is_valid:
            record = current_request.get()
            if record is not None:
                record.trace_id = format_trace_id(span_context.trace_id)
            if span.is_recording():
                span.set_attribute("jsonrpc.protocol.version", "2.0")
                session_id = connection_of(ctx).session_id
                if session_id is not None:
                    span.set_attribute("mcp.session.id", session_id)
        return await call_next(ctx)

    def tool_span(self, tool: RegisteredTool) -> ToolSpan:
        """Start the span of a call to ``tool`` and make it current; end it with :meth:`ToolSpan.end`."""
        span = self.tracer.start_span(
            f"execute_tool {tool.name}",
            kind=SpanKind.INTERNAL,
            attributes={
                "gen_ai.operation.name": "execute_tool",
                "gen_ai.tool.name": tool.name,
                "mcphost.plugin": tool.plugin,
            },
        )
        return ToolSpan(span)

    def shutdown(self) -> None:
        """Export what is still buffered and stop."""
        self.provider.shutdown()


def check(loaded: LoadedConfig) -> None:
    """Raise :class:`ConfigError` when ``[tracing]`` names an exporter whose packages are missing."""
    config = loaded.config.tracing
    if config.exporter == "none":
        return
    try:
        import opentelemetry.sdk.trace

        if config.exporter == "otlp":
            import opentelemetry.exporter.otlp.proto.http.trace_exporter  # noqa: F401
    except ImportError as error:
        message = f"needs the OpenTelemetry SDK and exporter ({error.name} is missing): pip install 'mcphost[otel]'"
        raise ConfigError(loaded.source, [loaded.problem(("tracing", "exporter"), message)]) from None


def setup(loaded: LoadedConfig, version: str) -> Tracing | None:
    """Install the tracer provider ``[tracing]`` asks for (process-wide, as OpenTelemetry's
    API has one); ``None`` when tracing is off. Raises :class:`ConfigError` like :func:`check`."""
    config = loaded.config.tracing
    if config.exporter == "none":
        return None
    check(loaded)
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor
    from opentelemetry.sdk.trace.sampling import ParentBased, TraceIdRatioBased

    resource = Resource.create(
        {
            "service.name": config.service_name,
            "service.version": version,
            "service.instance.id": str(uuid.uuid4()),
            "host.name": socket.gethostname(),
            "process.pid": os.getpid(),
        }
    )
    provider = TracerProvider(resource=resource, sampler=ParentBased(TraceIdRatioBased(config.sample_ratio)))
    exporter = _exporter(config)
    if config.exporter == "otlp":
        # Batched in a thread of its own: the event loop never waits for the collector.
        provider.add_span_processor(BatchSpanProcessor(exporter, export_timeout_millis=EXPORT_TIMEOUT * 1000))
    else:
        # The debugging exporters write each span as it ends, so what is read is complete.
        provider.add_span_processor(SimpleSpanProcessor(exporter))
    trace.set_tracer_provider(provider)
    return Tracing(provider, version)


def _exporter(config: TracingConfig) -> SpanExporter:
    from opentelemetry.sdk.trace.export import ConsoleSpanExporter

    if config.exporter == "otlp":
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        return OTLPSpanExporter(endpoint=config.endpoint, headers=config.headers or None, timeout=EXPORT_TIMEOUT)
    out: IO[str] = sys.stderr  # never stdout: in stdio mode that is the protocol channel
    if config.exporter == "file":
        assert config.path is not None
        # 0600, as every file mcphost writes: spans name callers, tools and their errors.
        out = os.fdopen(os.open(config.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600), "a", encoding="utf-8")
    return ConsoleSpanExporter(out=out, formatter=_json_line)


def _json_line(span: ReadableSpan) -> str:
    """One span as one line of JSON (the SDK's own span JSON, unindented)."""
    return span.to_json(indent=None) + "\n"
