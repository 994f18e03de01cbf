"""Bad input over HTTP: each malformed or unwelcome request gets the status code and JSON-RPC
error the spec (as the SDK implements it) prescribes, and the daemon keeps serving.

Every case is sent once, as a batch, to real ``mcphost serve`` processes: the main daemon
(``echo`` only) and a second one with a small body limit and a Host allowlist. Each case is
then checked on its own, and afterwards real MCP clients (handshake era and 2026-07-28) must
still list and call tools on the same daemons.

Two routes reach the SDK's transports, chosen by the ``MCP-Protocol-Version`` header:

* the 2025-11-25 (handshake) route: no header, or ``2025-11-25`` with an ``Mcp-Session-Id``;
  its JSON-RPC errors ride an SSE stream with HTTP 200 once a session exists; a body that is
  not one JSON-RPC message is refused by mcphost (``mcphost.protocol.wire``) with 400 and ``-32600``
  before the SDK, which would answer ``-32602`` or, for an object ``id``, nothing at all;
* the 2026-07-28 route: one self-contained POST with ``Mcp-Method``/``Mcp-Name`` headers and
  the ``_meta`` envelope; errors come back as JSON with the status from the SDK's
  ``ERROR_CODE_HTTP_STATUS`` table.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

import httpx
import mcp
import pytest
from mcp.shared.inbound import ERROR_CODE_HTTP_STATUS
from mcp_types import (
    HEADER_MISMATCH,
    INVALID_PARAMS,
    INVALID_REQUEST,
    METHOD_NOT_FOUND,
    PARSE_ERROR,
    UNSUPPORTED_PROTOCOL_VERSION,
)

from mcphost.testing import RunningDaemon

MODERN = "2026-07-28"
LEGACY = "2025-11-25"
MAX_BODY = 2048
"""The second daemon's ``server.max_body_bytes`` (the config's minimum is 1024)."""
ALLOWED_HOST = "mcp.example.com"

MAIN_CONFIG = {"plugins": {"enable": ["echo"]}}
LIMITED_CONFIG = {
    "server": {"allowed_hosts": [ALLOWED_HOST], "max_body_bytes": MAX_BODY},
    "plugins": {"enable": ["echo"]},
}

BASE_HEADERS = {"accept": "application/json, text/event-stream", "content-type": "application/json"}
ENVELOPE = {
    "io.modelcontextprotocol/protocolVersion": MODERN,
    "io.modelcontextprotocol/clientCapabilities": {},
}
NAME_PARAM = {"tools/call": "name", "prompts/get": "name", "resources/read": "uri"}


def initialize(request_id: int = 1) -> dict[str, Any]:
    """A handshake-era ``initialize`` request."""
    return {
        "jsonrpc": "2.0",
        "id": request_id,
        "method": "initialize",
        "params": {"protocolVersion": LEGACY, "capabilities": {}, "clientInfo": {"name": "bad-input", "version": "1"}},
    }


def request(method: str, params: Mapping[str, Any] | None = None, request_id: Any = 1) -> dict[str, Any]:
    """A JSON-RPC request (handshake era: no envelope)."""
    body: dict[str, Any] = {"jsonrpc": "2.0", "id": request_id, "method": method}
    if params is not None:
        body["params"] = dict(params)
    return body


def modern(
    method: str, params: Mapping[str, Any] | None = None, envelope: Mapping[str, Any] = ENVELOPE, request_id: Any = 1
) -> dict[str, Any]:
    """A 2026-07-28 JSON-RPC request carrying the ``_meta`` envelope."""
    return request(method, {**(params or {}), "_meta": dict(envelope)}, request_id)


def call(name: str, arguments: Mapping[str, Any]) -> dict[str, Any]:
    """``tools/call`` params."""
    return {"name": name, "arguments": dict(arguments)}


Route = Literal["legacy", "session", "modern"]


@dataclass(frozen=True)
class Case:
    """One bad (or boundary) request and what the daemon must answer."""

    name: str
    body: Any
    """A JSON value, or ``bytes`` sent exactly as they are."""
    status: int
    code: int | None = None
    """The JSON-RPC ``error.code`` the body must carry; ``None``: no JSON-RPC error."""
    message: str | None = None
    """Text the error message (or the ``isError`` result's text, or the plain body) contains."""
    route: Route = "legacy"
    """``legacy``: no version header, no session; ``session``: 2025-11-25 on an initialized
    session; ``modern``: 2026-07-28 with ``Mcp-Method``/``Mcp-Name`` taken from the body."""
    headers: Mapping[str, str | None] = field(default_factory=dict)
    """Header overrides; ``None`` removes a header."""
    http_method: str = "POST"
    daemon: Literal["main", "limited"] = "main"
    tool_error: bool = False
    """The answer is a result with ``isError: true``, not a JSON-RPC error."""


def chunks(size: int) -> Iterator[bytes]:
    """A body of ``size`` bytes streamed without ``Content-Length`` (chunked)."""
    for _ in range(size // 1024):
        yield b"x" * 1024


CASES = [
    # -- malformed JSON -------------------------------------------------------------
    Case("legacy-malformed-json", b'{"jsonrpc": "2.0", "id": 1,', 400, PARSE_ERROR),
    Case("session-malformed-json", b'{"jsonrpc": "2.0", "id": 1,', 400, PARSE_ERROR, route="session"),
    Case(
        "modern-malformed-json",
        b'{"jsonrpc": "2.0", "id": 1,',
        400,
        PARSE_ERROR,
        route="modern",
        headers={"mcp-method": "tools/list"},
    ),
    # -- wrong JSON-RPC shapes ------------------------------------------------------
    Case("legacy-missing-jsonrpc", {k: v for k, v in initialize().items() if k != "jsonrpc"}, 400, INVALID_REQUEST),
    Case("legacy-batch", [initialize()], 400, INVALID_REQUEST),
    Case("legacy-bare-string", "initialize", 400, INVALID_REQUEST),
    Case("legacy-null-id", request("initialize", request_id=None), 400, INVALID_REQUEST),
    Case("legacy-array-params", {**request("tools/list"), "params": [1, 2]}, 400, INVALID_REQUEST),
    Case("legacy-no-method", {"jsonrpc": "2.0", "id": 3}, 400, INVALID_REQUEST),
    Case("session-missing-jsonrpc", {"id": 2, "method": "tools/list"}, 400, INVALID_REQUEST, route="session"),
    Case("session-batch", [request("tools/list")], 400, INVALID_REQUEST, route="session"),
    Case("session-bare-string", "tools/list", 400, INVALID_REQUEST, route="session"),
    # The SDK would take an object id for a notification and never answer it.
    Case("session-object-id", request("tools/list", request_id={}), 400, INVALID_REQUEST, route="session"),
    Case(
        "modern-missing-jsonrpc",
        {k: v for k, v in modern("tools/list").items() if k != "jsonrpc"},
        400,
        INVALID_REQUEST,
        route="modern",
    ),
    Case("modern-object-id", modern("tools/list", request_id={}), 400, INVALID_REQUEST, route="modern"),
    Case(
        "modern-batch",
        [modern("tools/list")],
        400,
        INVALID_REQUEST,
        route="modern",
        headers={"mcp-method": "tools/list"},
    ),
    Case(
        "modern-bare-string", "tools/list", 400, INVALID_REQUEST, route="modern", headers={"mcp-method": "tools/list"}
    ),
    Case("modern-missing-envelope", request("tools/list"), 400, INVALID_PARAMS, "_meta", route="modern"),
    # -- a request that needs a session, without one --------------------------------
    Case("legacy-request-without-session", request("tools/list"), 400, INVALID_REQUEST, "Missing session ID"),
    # -- unknown method ---------------------------------------------------------------
    Case("session-unknown-method", request("no/such/method", request_id=3), 200, METHOD_NOT_FOUND, route="session"),
    Case(
        "modern-unknown-method",
        modern("no/such/method"),
        ERROR_CODE_HTTP_STATUS[METHOD_NOT_FOUND],
        METHOD_NOT_FOUND,
        route="modern",
    ),
    # -- unknown tool -----------------------------------------------------------------
    Case(
        "session-unknown-tool",
        request("tools/call", call("no_such_tool", {}), request_id=4),
        200,
        INVALID_PARAMS,
        "Unknown tool",
        route="session",
    ),
    Case(
        "modern-unknown-tool",
        modern("tools/call", call("no_such_tool", {})),
        400,
        INVALID_PARAMS,
        "Unknown tool",
        route="modern",
    ),
    # -- arguments failing the tool's schema: a tool execution error naming the argument --
    Case(
        "session-invalid-arguments",
        request("tools/call", call("echo_add", {"a": "x", "b": 1}), request_id=5),
        200,
        message="'echo_add': a: ",
        route="session",
        tool_error=True,
    ),
    Case(
        "modern-invalid-arguments",
        modern("tools/call", call("echo_add", {"a": "x", "b": 1})),
        200,
        message="'echo_add': a: ",
        route="modern",
        tool_error=True,
    ),
    # -- unknown session id -------------------------------------------------------------
    Case(
        "unknown-session-post",
        request("tools/list"),
        404,
        INVALID_REQUEST,
        "Session not found",
        headers={"mcp-session-id": "no-such-session", "mcp-protocol-version": LEGACY},
    ),
    Case(
        "unknown-session-get",
        None,
        404,
        INVALID_REQUEST,
        "Session not found",
        http_method="GET",
        headers={"mcp-session-id": "no-such-session", "accept": "text/event-stream"},
    ),
    Case(
        "unknown-session-delete",
        None,
        404,
        INVALID_REQUEST,
        "Session not found",
        http_method="DELETE",
        headers={"mcp-session-id": "no-such-session"},
    ),
    # -- unsupported protocol version header ---------------------------------------------
    # Whatever the body, a version nobody serves is named as such, with the supported list.
    Case(
        "legacy-unsupported-version",
        initialize(),
        400,
        UNSUPPORTED_PROTOCOL_VERSION,
        headers={"mcp-protocol-version": "1999-01-01"},
    ),
    Case(
        "session-unsupported-version",
        request("tools/list"),
        400,
        UNSUPPORTED_PROTOCOL_VERSION,
        route="session",
        headers={"mcp-protocol-version": "1999-01-01"},
    ),
    Case(
        "modern-unsupported-version",
        modern("tools/list", envelope={**ENVELOPE, "io.modelcontextprotocol/protocolVersion": "1999-01-01"}),
        400,
        UNSUPPORTED_PROTOCOL_VERSION,
        route="modern",
        headers={"mcp-protocol-version": "1999-01-01"},
    ),
    # -- 2026-07-28 routing headers that disagree with the body ---------------------------
    Case(
        "modern-method-header-mismatch",
        modern("tools/list"),
        ERROR_CODE_HTTP_STATUS[HEADER_MISMATCH],
        HEADER_MISMATCH,
        "mcp-method",
        route="modern",
        headers={"mcp-method": "prompts/list"},
    ),
    Case(
        "modern-method-header-missing",
        modern("tools/list"),
        ERROR_CODE_HTTP_STATUS[HEADER_MISMATCH],
        HEADER_MISMATCH,
        "mcp-method",
        route="modern",
        headers={"mcp-method": None},
    ),
    Case(
        "modern-name-header-mismatch",
        modern("tools/call", call("echo_echo", {"text": "hi"})),
        ERROR_CODE_HTTP_STATUS[HEADER_MISMATCH],
        HEADER_MISMATCH,
        "mcp-name",
        route="modern",
        headers={"mcp-name": "echo_add"},
    ),
    Case(
        "modern-version-header-mismatch",
        modern("tools/list", envelope={**ENVELOPE, "io.modelcontextprotocol/protocolVersion": LEGACY}),
        ERROR_CODE_HTTP_STATUS[HEADER_MISMATCH],
        HEADER_MISMATCH,
        "mcp-protocol-version",
        route="modern",
    ),
    # -- DNS-rebinding protection -------------------------------------------------------
    Case(
        "legacy-bad-origin",
        initialize(),
        403,
        message="Invalid Origin header",
        headers={"origin": "http://evil.example"},
    ),
    Case(
        "session-bad-origin",
        request("tools/list"),
        403,
        message="Invalid Origin header",
        route="session",
        headers={"origin": "http://evil.example"},
    ),
    Case(
        "modern-bad-origin",
        modern("tools/list"),
        403,
        message="Invalid Origin header",
        route="modern",
        headers={"origin": "http://evil.example"},
    ),
    Case("legacy-loopback-origin", initialize(), 200, headers={"origin": "http://localhost:3000"}),
    Case("legacy-bad-host", initialize(), 421, message="Invalid Host header", headers={"host": "evil.example"}),
    Case(
        "session-bad-host",
        request("tools/list"),
        421,
        message="Invalid Host header",
        route="session",
        headers={"host": "evil.example"},
    ),
    Case(
        "modern-bad-host",
        modern("tools/list"),
        421,
        message="Invalid Host header",
        route="modern",
        headers={"host": "evil.example"},
    ),
    # -- wrong Content-Type (checked before anything else, as a plain 400) ------------------
    Case(
        "legacy-text-content-type",
        initialize(),
        400,
        message="Invalid Content-Type header",
        headers={"content-type": "text/plain"},
    ),
    Case(
        "legacy-missing-content-type",
        initialize(),
        400,
        message="Invalid Content-Type header",
        headers={"content-type": None},
    ),
    Case(
        "session-text-content-type",
        request("tools/list"),
        400,
        message="Invalid Content-Type header",
        route="session",
        headers={"content-type": "text/plain"},
    ),
    Case(
        "modern-text-content-type",
        modern("tools/list"),
        400,
        message="Invalid Content-Type header",
        route="modern",
        headers={"content-type": "text/plain"},
    ),
    # -- the second daemon: body limit and Host allowlist -------------------------------
    Case("legacy-oversized-body", b"x" * 10 * 1024, 413, message="Request body too large", daemon="limited"),
    Case("legacy-oversized-chunked-body", chunks, 413, message="Request body too large", daemon="limited"),
    Case(
        "modern-oversized-body",
        b"x" * 10 * 1024,
        413,
        message="Request body too large",
        route="modern",
        headers={"mcp-method": "tools/list"},
        daemon="limited",
    ),
    Case("legacy-allowlisted-host", initialize(), 200, daemon="limited", headers={"host": ALLOWED_HOST}),
    Case(
        "modern-allowlisted-host",
        modern("tools/list"),
        200,
        route="modern",
        daemon="limited",
        headers={"host": ALLOWED_HOST},
    ),
    Case(
        "legacy-allowlisted-host-other-port",
        initialize(),
        421,
        message="Invalid Host header",
        daemon="limited",
        headers={"host": f"{ALLOWED_HOST}:8443"},
    ),
    Case(
        "legacy-host-not-on-allowlist",
        initialize(),
        421,
        message="Invalid Host header",
        daemon="limited",
        headers={"host": "other.example.com"},
    ),
]


@dataclass
class Daemons:
    """The module's two daemons and the session opened on the main one."""

    main: RunningDaemon
    limited: RunningDaemon
    session_id: str


def open_session(client: httpx.Client, daemon: RunningDaemon) -> str:
    """Initialize a handshake-era session on ``daemon`` with raw HTTP; returns its id."""
    response = client.post(daemon.url, json=initialize(), headers=BASE_HEADERS)
    assert response.status_code == 200, response.text
    session_id = response.headers["mcp-session-id"]
    headers = {**BASE_HEADERS, "mcp-session-id": session_id, "mcp-protocol-version": LEGACY}
    ack = client.post(daemon.url, json={"jsonrpc": "2.0", "method": "notifications/initialized"}, headers=headers)
    assert ack.status_code == 202, ack.text
    return session_id


@pytest.fixture(scope="module")
def daemons(module_daemon: Callable[..., RunningDaemon]) -> Daemons:
    """The main daemon (``echo``) and the limited one, with a session open on the main one."""
    main = module_daemon(MAIN_CONFIG)
    limited = module_daemon(LIMITED_CONFIG)
    with httpx.Client(timeout=30) as client:
        session_id = open_session(client, main)
    return Daemons(main, limited, session_id)


def headers_for(case: Case, session_id: str) -> dict[str, str]:
    """The request headers of ``case``: the route's defaults, then the case's overrides."""
    headers = dict(BASE_HEADERS)
    if case.route == "session":
        headers.update({"mcp-session-id": session_id, "mcp-protocol-version": LEGACY})
    elif case.route == "modern":
        headers["mcp-protocol-version"] = MODERN
        if isinstance(case.body, dict) and isinstance(case.body.get("method"), str):
            method = case.body["method"]
            headers["mcp-method"] = method
            name = (case.body.get("params") or {}).get(NAME_PARAM.get(method, ""))
            if isinstance(name, str):
                headers["mcp-name"] = name
    for name, value in case.headers.items():
        if value is None:
            headers.pop(name, None)
        else:
            headers[name] = value
    return headers


def send(client: httpx.Client, daemon: RunningDaemon, case: Case, session_id: str) -> httpx.Response:
    """Send ``case`` to ``daemon`` and read the whole response."""
    if callable(case.body):
        content: Any = case.body(10 * 1024)
    elif isinstance(case.body, bytes) or case.body is None:
        content = case.body
    else:
        content = json.dumps(case.body).encode()
    return client.request(case.http_method, daemon.url, content=content, headers=headers_for(case, session_id))


@pytest.fixture(scope="module")
def responses(daemons: Daemons) -> dict[str, httpx.Response]:
    """Every case sent once, in order, to its daemon: ``name -> response``."""
    answers = {}
    with httpx.Client(timeout=30) as client:
        for case in CASES:
            daemon = daemons.main if case.daemon == "main" else daemons.limited
            answers[case.name] = send(client, daemon, case, daemons.session_id)
    return answers


def jsonrpc_message(response: httpx.Response) -> dict[str, Any] | None:
    """The JSON-RPC response in a JSON or SSE body (the last message with an ``id``), if any."""
    content_type = response.headers.get("content-type", "")
    if content_type.startswith("text/event-stream"):
        messages = [
            json.loads(line[len("data:") :])
            for line in response.text.splitlines()
            if line.startswith("data:") and line[len("data:") :].strip()
        ]
        answers = [m for m in messages if "id" in m]
        return answers[-1] if answers else None
    if content_type.startswith("application/json") and response.content:
        return response.json()
    return None


@pytest.mark.parametrize("case", CASES, ids=lambda case: case.name)
def test_bad_request_gets_its_status_and_error(case: Case, responses: dict[str, httpx.Response]) -> None:
    """The HTTP status and the JSON-RPC error (or result, or plain body) of one case."""
    response = responses[case.name]
    assert response.status_code == case.status, response.text
    message = jsonrpc_message(response)
    if case.code is not None:
        assert message is not None, response.text
        assert message["error"]["code"] == case.code, message
        assert "result" not in message
        if case.message:
            assert case.message in message["error"]["message"], message
    elif case.tool_error:
        assert message is not None, response.text
        result = message["result"]
        assert result["isError"] is True, result
        text = " ".join(item.get("text", "") for item in result["content"])
        assert case.message and case.message in text, result
    elif case.status == 200:
        assert message is not None, response.text
        assert "result" in message and "error" not in message, message
    elif case.status == 202:
        assert response.content == b"", response.text
    else:
        assert message is None or "error" in message, response.text
        assert case.message and case.message in response.text, response.text


def test_no_response_body_contains_a_traceback(responses: dict[str, httpx.Response]) -> None:
    """Whatever went wrong, no answer carries a Python traceback."""
    leaking = [name for name, response in responses.items() if "Traceback" in response.text]
    assert leaking == []


def test_unknown_path_is_404_json(daemons: Daemons) -> None:
    """A path that is not the endpoint, ``/health`` or ``/ready`` gets a JSON 404 naming the endpoint."""
    response = httpx.get(f"{daemons.main.base_url}/nonexistent", timeout=10)
    assert response.status_code == 404
    assert response.headers["content-type"].startswith("application/json")
    assert response.json() == {"error": "not found", "mcp_endpoint": "/mcp"}
    assert "Traceback" not in response.text


def test_health_is_200(daemons: Daemons) -> None:
    """``/health`` answers 200 while the daemon runs."""
    response = httpx.get(f"{daemons.main.base_url}/health", timeout=10)
    assert response.status_code == 200
    assert response.json() == {"status": "ok"}


def test_ready_lists_echo_loaded_and_ready(daemons: Daemons) -> None:
    """The admin listener's ``/ready`` is a JSON 200 listing ``echo`` as loaded and ready."""
    response = httpx.get(f"{daemons.main.admin_url}/ready", timeout=10)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("application/json")
    report = response.json()
    assert report["status"] == "ready"
    assert report["plugins"]["echo"]["status"] == "loaded"
    assert report["plugins"]["echo"]["ready"] is True


async def assert_serves_echo(url: str, mode: str) -> None:
    """A real MCP client in ``mode`` lists ``echo_echo`` and calls it."""
    async with mcp.Client(url, mode=mode) as client:  # type: ignore[arg-type]
        tools = await client.list_tools()
        assert "echo_echo" in {tool.name for tool in tools.tools}
        result = await client.call_tool("echo_echo", {"text": f"still serving ({mode})"})
        assert result.is_error is False
        assert result.content[0].text == f"still serving ({mode})"  # type: ignore[union-attr]


@pytest.mark.parametrize("mode", ["legacy", MODERN])
async def test_main_daemon_keeps_serving_after_bad_input(
    daemons: Daemons, responses: dict[str, httpx.Response], mode: str
) -> None:
    """After the whole batch, the main daemon is alive and a real client lists and calls ``echo_echo``."""
    assert daemons.main.process.poll() is None
    await assert_serves_echo(daemons.main.url, mode)
    assert daemons.main.process.poll() is None


@pytest.mark.parametrize("mode", ["legacy", MODERN])
async def test_limited_daemon_keeps_serving_after_bad_input(
    daemons: Daemons, responses: dict[str, httpx.Response], mode: str
) -> None:
    """After its oversized bodies and foreign hosts, the limited daemon is alive and serving."""
    assert daemons.limited.process.poll() is None
    await assert_serves_echo(daemons.limited.url, mode)
    assert daemons.limited.process.poll() is None


async def test_session_survives_bad_requests_on_it(daemons: Daemons, responses: dict[str, httpx.Response]) -> None:
    """The session that received malformed and invalid requests still answers ``tools/list``."""
    headers = {**BASE_HEADERS, "mcp-session-id": daemons.session_id, "mcp-protocol-version": LEGACY}
    async with httpx.AsyncClient(timeout=30) as client:
        response = await client.post(daemons.main.url, json=request("tools/list", request_id=99), headers=headers)
    assert response.status_code == 200, response.text
    message = jsonrpc_message(response)
    assert message is not None and message["id"] == 99
    assert "echo_echo" in {tool["name"] for tool in message["result"]["tools"]}


def test_main_daemon_logged_no_traceback_for_bad_input(daemons: Daemons, responses: dict[str, httpx.Response]) -> None:
    """Bad input is the client's mistake: the daemon's log carries no exception for any of it."""
    records = daemons.main.log_records() + daemons.limited.log_records()
    assert any(r.get("event") == "request" for r in records), "the daemons logged no request at all"
    with_exception = [r for r in records if "exception" in r or "Traceback" in json.dumps(r)]
    assert with_exception == []
