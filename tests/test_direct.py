"""Direct answers (mcphost.protocol.direct): which requests skip the SDK's transport, that their
answers are the SDK's answers, and that everything else still gets the SDK's exact refusal."""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest
from mcp_types import HEADER_MISMATCH

from mcphost.testing import ACCEPT_HEADERS, RunningDaemon, initialize_request, stateless_request

CONFIG = {"plugins": {"enable": ["echo"]}}
LEGACY = "2025-11-25"


@pytest.fixture(scope="module")
def daemon(module_daemon: Any) -> RunningDaemon:
    return module_daemon(CONFIG)


@pytest.fixture
def session(daemon: RunningDaemon) -> Iterator[tuple[httpx.Client, dict[str, str]]]:
    """A raw HTTP client (for the daemon's URL) with a 2025-11-25 session open, and the
    headers its requests carry."""
    with httpx.Client(base_url=daemon.url.removesuffix("/mcp"), timeout=30) as client:
        opened = client.post("/mcp", json=initialize_request(LEGACY), headers=ACCEPT_HEADERS)
        assert opened.status_code == 200, opened.text
        headers = {**ACCEPT_HEADERS, "mcp-session-id": opened.headers["mcp-session-id"], "mcp-protocol-version": LEGACY}
        ack = client.post("/mcp", json={"jsonrpc": "2.0", "method": "notifications/initialized"}, headers=headers)
        assert ack.status_code == 202
        yield client, headers


def call(name: str, arguments: dict[str, Any], request_id: int = 2, **meta: Any) -> dict[str, Any]:
    params: dict[str, Any] = {"name": name, "arguments": arguments}
    if meta:
        params["_meta"] = meta
    return {"jsonrpc": "2.0", "id": request_id, "method": "tools/call", "params": params}


def sse_message(text: str) -> dict[str, Any]:
    """The JSON-RPC response in an SSE body (the last ``data:`` line)."""
    return json.loads([line for line in text.splitlines() if line.startswith("data:") and line[5:].strip()][-1][5:])


def test_a_quiet_call_on_a_session_is_answered_with_json_like_the_sdk_answers(session: Any) -> None:
    client, headers = session
    direct = client.post("/mcp", json=call("echo_add", {"a": 2, "b": 3}), headers=headers)
    assert direct.headers["content-type"] == "application/json"
    assert direct.headers["mcp-session-id"] == headers["mcp-session-id"]
    # The same call asking for progress can be notified, so the SDK's transport streams it.
    streamed = client.post("/mcp", json=call("echo_add", {"a": 2, "b": 3}, progressToken="p"), headers=headers)
    assert streamed.headers["content-type"].startswith("text/event-stream")
    assert direct.json() == sse_message(streamed.text)
    assert direct.json()["result"]["structuredContent"] == {"a": 2, "b": 3, "total": 5}


def test_a_call_with_a_tool_context_goes_the_sdks_way(session: Any) -> None:
    client, headers = session
    answer = client.post("/mcp", json=call("echo_whoami", {}), headers=headers)
    assert answer.headers["content-type"].startswith("text/event-stream")
    assert sse_message(answer.text)["result"]["structuredContent"]["session_id"] == headers["mcp-session-id"]


@pytest.mark.parametrize(
    ("body_change", "code"),
    [
        (lambda b: b["params"].update(arguments=[1, 2]), -32602),  # arguments not an object
        (lambda b: b["params"].update(name=7), -32602),  # name not a string
    ],
)
def test_invalid_params_get_the_sdks_error_on_a_session(session: Any, body_change: Any, code: int) -> None:
    client, headers = session
    body = call("echo_add", {"a": 1, "b": 2})
    body_change(body)
    answer = client.post("/mcp", json=body, headers=headers)
    message = sse_message(answer.text) if answer.headers["content-type"].startswith("text/") else answer.json()
    assert message["error"]["code"] == code


def test_a_session_of_another_process_or_none_is_not_answered_directly(daemon: RunningDaemon) -> None:
    headers = {**ACCEPT_HEADERS, "mcp-session-id": "not-a-session", "mcp-protocol-version": LEGACY}
    answer = httpx.post(daemon.url, json=call("echo_add", {"a": 1, "b": 2}), headers=headers, timeout=30)
    assert answer.status_code == 404


def test_a_stateless_call_is_answered_directly_with_the_sdks_shape(daemon: RunningDaemon) -> None:
    body, headers = stateless_request("tools/call", {"name": "echo_add", "arguments": {"a": 1, "b": 2}})
    answer = httpx.post(daemon.url, json=body, headers=headers, timeout=30)
    assert answer.status_code == 200 and answer.headers["content-type"] == "application/json"
    result = answer.json()["result"]
    assert result["structuredContent"] == {"a": 1, "b": 2, "total": 3}
    # The SDK's result shaping for 2026-07-28: a resultType and the serverInfo stamp.
    assert result["resultType"] == "complete"
    assert "io.modelcontextprotocol/serverInfo" in result["_meta"]


@pytest.mark.parametrize(
    ("header", "value"),
    [("mcp-name", "echo_greet"), ("mcp-method", "tools/list"), ("content-type", "text/plain"), ("accept", "text/html")],
)
def test_a_stateless_call_the_sdk_refuses_is_refused_as_the_sdk_does(
    daemon: RunningDaemon, header: str, value: str
) -> None:
    body, headers = stateless_request("tools/call", {"name": "echo_add", "arguments": {"a": 1, "b": 2}})
    answer = httpx.post(daemon.url, json=body, headers={**headers, header: value}, timeout=30)
    assert answer.status_code in (400, 406)
    if header.startswith("mcp-"):
        assert answer.json()["error"]["code"] == HEADER_MISMATCH


@pytest.mark.parametrize(
    ("region", "header", "status"),
    [("eu", "eu", 200), ("eu", "us", 400), ("eu", None, 400)],
)
def test_mcp_param_headers_of_a_declared_parameter_must_agree_with_the_body(
    module_daemon: Any, region: str, header: str | None, status: int
) -> None:
    """A tool parameter declared ``x-mcp-header`` is mirrored in an ``Mcp-Param-*`` header;
    a header that disagrees with the body, or is missing, gets the SDK's HEADER_MISMATCH."""
    daemon = module_daemon({"plugins": {"enable": ["conformance"], "conformance": {"prefix": ""}}})
    body, headers = stateless_request("tools/call", {"name": "test_custom_headers", "arguments": {"region": region}})
    if header is not None:
        headers["mcp-param-region"] = header
    answer = httpx.post(daemon.url, json=body, headers=headers, timeout=30)
    assert answer.status_code == status, answer.text
    if status == 200:
        assert answer.json()["result"]["content"][0]["text"] == "region=eu"
    else:
        assert answer.json()["error"]["code"] == HEADER_MISMATCH


def test_an_mcp_param_header_for_an_undeclared_parameter_is_ignored(daemon: RunningDaemon) -> None:
    """Only declared parameters are checked (the SDK's rule): a stray header changes nothing."""
    body, headers = stateless_request("tools/call", {"name": "echo_add", "arguments": {"a": 1, "b": 2}})
    answer = httpx.post(daemon.url, json=body, headers={**headers, "mcp-param-a": "7"}, timeout=30)
    assert answer.status_code == 200, answer.text
    assert answer.json()["result"]["structuredContent"]["total"] == 3


def test_a_stateless_call_whose_client_closes_the_connection_is_cancelled(module_daemon: Any) -> None:
    """A 2026-07-28 client cancels a request by closing its connection: the call answered
    directly is cancelled then, and logged as cancelled, not run to its end."""
    daemon = module_daemon({"plugins": {"enable": ["features"]}})
    body, headers = stateless_request("tools/call", {"name": "features_wait", "arguments": {"seconds": 30}})
    payload = json.dumps(body).encode()
    head = [f"POST {urlsplit(daemon.url).path} HTTP/1.1", f"host: {urlsplit(daemon.url).netloc}"]
    head += [f"{name}: {value}" for name, value in {**headers, "content-length": str(len(payload))}.items()]
    with socket.create_connection((urlsplit(daemon.url).hostname, urlsplit(daemon.url).port)) as client:
        client.sendall(("\r\n".join(head) + "\r\n\r\n").encode() + payload)
        time.sleep(0.5)  # the call under way
    deadline = time.monotonic() + 10  # a generous bound, far below the call's 30 s
    while not (records := [r for r in daemon.log_records() if r.get("tool") == "features_wait"]):
        assert time.monotonic() < deadline, "the call went on after its client closed the connection"
        time.sleep(0.05)
    assert records[0]["tool_status"] == "cancelled" and records[0]["tool_ms"] < 10_000
