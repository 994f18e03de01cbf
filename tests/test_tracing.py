"""OpenTelemetry traces from real daemons: the span tree of a tool call, its attributes, the
client's trace as parent (W3C ``traceparent`` header, or ``_meta`` per SEP-414), the trace id
in the request's log line; read back from the ``file`` exporter, and received over OTLP/HTTP
by a collector the test runs."""

from __future__ import annotations

import json
import secrets
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest

from mcphost.testing import ACCEPT_HEADERS, RunningDaemon, initialize_request, start_daemon, stateless_request

CONFIG = {"plugins": {"enable": ["echo"], "echo": {"tools": {"slow": {"timeout": 0.3}}}}}


def traceparent() -> tuple[str, str, str]:
    """A client's trace context: ``(header value, trace id, span id)``."""
    trace_id, span_id = secrets.token_hex(16), secrets.token_hex(8)
    return f"00-{trace_id}-{span_id}-01", trace_id, span_id


def until(found: Callable[[], Any], timeout: float = 10.0) -> Any:
    deadline = time.monotonic() + timeout
    while not (result := found()):
        assert time.monotonic() < deadline, "not within the time"
        time.sleep(0.05)
    return result


@pytest.fixture(scope="module")
def spans_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("spans") / "spans.jsonl"


@pytest.fixture(scope="module")
def daemon(module_daemon: Any, spans_file: Path) -> RunningDaemon:
    return module_daemon({**CONFIG, "tracing": {"exporter": "file", "path": str(spans_file)}})


def spans(path: Path, trace_id: str) -> list[dict[str, Any]]:
    """The spans of one trace the file exporter wrote."""
    if not path.exists():
        return []
    found = [json.loads(line) for line in path.read_text().splitlines()]
    return [s for s in found if s["context"]["trace_id"] == f"0x{trace_id}"]


def tree(path: Path, trace_id: str, count: int) -> dict[str, dict[str, Any]]:
    """The ``count`` spans of a trace, by name, once all are written."""

    def complete() -> list[dict[str, Any]] | None:
        found = spans(path, trace_id)
        return found if len(found) >= count else None

    return {s["name"]: s for s in until(complete)}


def post(daemon: RunningDaemon, body: dict[str, Any], headers: dict[str, str]) -> dict[str, Any]:
    """A raw POST and its JSON-RPC response (a JSON body, or the last event of an SSE stream)."""
    response = httpx.post(daemon.url, json=body, headers=headers, timeout=30)
    if response.headers.get("content-type", "").startswith("text/event-stream"):
        events = [
            json.loads(line[5:]) for line in response.text.splitlines() if line.startswith("data:") and line[5:].strip()
        ]
        return next(e for e in reversed(events) if "id" in e)
    return dict(response.json())


def test_a_tool_call_is_a_server_span_with_a_tool_span_under_the_clients_trace(
    daemon: RunningDaemon, spans_file: Path
) -> None:
    header, trace_id, client_span = traceparent()
    body, headers = stateless_request("tools/call", {"name": "echo_add", "arguments": {"a": 1, "b": 2}}, request_id=7)
    response = httpx.post(daemon.url, json=body, headers={**headers, "traceparent": header}, timeout=30)
    assert response.status_code == 200

    found = tree(spans_file, trace_id, 2)
    server, tool = found["tools/call echo_add"], found["execute_tool echo_add"]
    assert server["kind"] == "SpanKind.SERVER" and server["parent_id"] == f"0x{client_span}"
    assert server["attributes"] == {
        "mcp.method.name": "tools/call",
        "mcp.protocol.version": "2026-07-28",
        "jsonrpc.request.id": "7",
        "jsonrpc.protocol.version": "2.0",
        "gen_ai.operation.name": "execute_tool",
        "gen_ai.tool.name": "echo_add",
    }
    assert server["status"]["status_code"] == "UNSET"
    assert tool["kind"] == "SpanKind.INTERNAL" and tool["parent_id"] == server["context"]["span_id"]
    assert tool["attributes"] == {
        "gen_ai.operation.name": "execute_tool",
        "gen_ai.tool.name": "echo_add",
        "mcphost.plugin": "echo",
        "mcphost.tool.status": "ok",
    }
    assert server["resource"]["attributes"]["service.name"] == "mcphost"
    line = daemon.wait_for_log(lambda r: r.get("event") == "request" and r.get("trace_id") == trace_id)
    assert line["tool"] == "echo_add" and line["tool_status"] == "ok"


def test_the_trace_context_in_meta_and_the_session_of_a_2025_11_25_client(
    daemon: RunningDaemon, spans_file: Path
) -> None:
    opened = httpx.post(daemon.url, json=initialize_request(), headers=ACCEPT_HEADERS, timeout=30)
    session = opened.headers["mcp-session-id"]
    headers = {**ACCEPT_HEADERS, "mcp-session-id": session, "mcp-protocol-version": "2025-11-25"}
    httpx.post(daemon.url, json={"jsonrpc": "2.0", "method": "notifications/initialized"}, headers=headers)
    header, trace_id, client_span = traceparent()
    params = {"name": "echo_slow", "arguments": {"seconds": 2}, "_meta": {"traceparent": header}}
    answer = post(daemon, {"jsonrpc": "2.0", "id": 2, "method": "tools/call", "params": params}, headers)
    assert answer["result"]["isError"]  # timed out

    found = tree(spans_file, trace_id, 2)
    server, tool = found["tools/call echo_slow"], found["execute_tool echo_slow"]
    assert server["parent_id"] == f"0x{client_span}"
    assert server["attributes"]["mcp.session.id"] == session
    assert server["attributes"]["mcp.protocol.version"] == "2025-11-25"
    assert server["attributes"]["error.type"] == "tool_error" and server["status"]["status_code"] == "ERROR"
    assert tool["parent_id"] == server["context"]["span_id"]
    assert tool["attributes"]["mcphost.tool.status"] == "timeout" and tool["attributes"]["error.type"] == "timeout"
    assert tool["status"]["status_code"] == "ERROR"
    assert 0.3 <= _seconds(tool) < 2


def test_a_json_rpc_error_is_on_the_span_and_a_refused_request_keeps_the_trace_id(
    daemon: RunningDaemon, spans_file: Path
) -> None:
    header, trace_id, _ = traceparent()
    body, headers = stateless_request("tools/call", {"name": "no_such_tool", "arguments": {}})
    httpx.post(daemon.url, json=body, headers={**headers, "traceparent": header}, timeout=30)
    server = tree(spans_file, trace_id, 1)["tools/call no_such_tool"]
    assert server["attributes"]["error.type"] == "-32602"
    assert server["attributes"]["rpc.response.status_code"] == "-32602"
    assert server["status"] == {"status_code": "ERROR", "description": "Unknown tool: no_such_tool"}

    # Refused before MCP (an unsupported protocol version): no span, but the log line still
    # names the client's trace, to find the request from it.
    header, trace_id, _ = traceparent()
    headers["mcp-protocol-version"] = "1999-01-01"
    assert httpx.post(daemon.url, json=body, headers={**headers, "traceparent": header}).status_code == 400
    line = daemon.wait_for_log(lambda r: r.get("trace_id") == trace_id)
    assert line["status"] == 400


def _seconds(span: dict[str, Any]) -> float:
    from datetime import datetime

    start, end = (datetime.fromisoformat(span[k].replace("Z", "+00:00")) for k in ("start_time", "end_time"))
    return (end - start).total_seconds()


# --- OTLP/HTTP ------------------------------------------------------------------------------


class Collector:
    """A minimal OTLP/HTTP trace receiver on 127.0.0.1: decodes each export, keeps the spans."""

    def __init__(self) -> None:
        from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

        self.spans: list[dict[str, Any]] = []
        self.headers: list[dict[str, str]] = []
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                request = ExportTraceServiceRequest.FromString(self.rfile.read(int(self.headers["content-length"])))
                owner.headers.append({k.lower(): v for k, v in self.headers.items()})
                for resource_spans in request.resource_spans:
                    resource = {a.key: a.value.string_value for a in resource_spans.resource.attributes}
                    for scope_spans in resource_spans.scope_spans:
                        for span in scope_spans.spans:
                            owner.spans.append(
                                {
                                    "name": span.name,
                                    "trace_id": span.trace_id.hex(),
                                    "span_id": span.span_id.hex(),
                                    "parent_id": span.parent_span_id.hex(),
                                    "attributes": {a.key: a.value.string_value for a in span.attributes},
                                    "scope": scope_spans.scope.name,
                                    "resource": resource,
                                }
                            )
                self.send_response(200)
                self.send_header("content-type", "application/x-protobuf")
                self.send_header("content-length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/v1/traces"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def collector() -> Iterator[Collector]:
    pytest.importorskip("opentelemetry.exporter.otlp.proto.http", reason="needs mcphost[otel]")
    receiver = Collector()
    yield receiver
    receiver.close()


def test_spans_are_exported_over_otlp(tmp_path: Path, collector: Collector) -> None:
    tracing = {
        "exporter": "otlp",
        "endpoint": collector.url,
        "service_name": "mcphost-test",
        "headers": {"x-collector-key": "k1"},
    }
    # A short batch delay so the test need not wait the default 5 s.
    daemon = start_daemon(tmp_path, {**CONFIG, "tracing": tracing}, env={"OTEL_BSP_SCHEDULE_DELAY": "50"})
    try:
        header, trace_id, client_span = traceparent()
        body, headers = stateless_request("tools/call", {"name": "echo_add", "arguments": {"a": 2, "b": 2}})
        assert httpx.post(daemon.url, json=body, headers={**headers, "traceparent": header}).status_code == 200

        def received() -> list[dict[str, Any]] | None:
            found = [s for s in collector.spans if s["trace_id"] == trace_id]
            return found if len(found) >= 2 else None

        found = until(received)
    finally:
        daemon.stop()
    by_name = {s["name"]: s for s in found}
    server, tool = by_name["tools/call echo_add"], by_name["execute_tool echo_add"]
    assert server["parent_id"] == client_span and tool["parent_id"] == server["span_id"]
    assert server["scope"] == "mcp-python-sdk" and tool["scope"] == "mcphost"
    assert tool["attributes"]["gen_ai.tool.name"] == "echo_add"
    assert server["resource"]["service.name"] == "mcphost-test"
    assert collector.headers[0]["x-collector-key"] == "k1"
    assert collector.headers[0]["content-type"] == "application/x-protobuf"
