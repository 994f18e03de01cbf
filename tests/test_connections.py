"""Connections a client cannot hold open: ``Connection: close`` ends the connection once
the response is sent, on every path a request can take, a request whose headers or body
trickle in is cut off, and a connection whose stream the server ended is timed as idle.
Raw sockets, since these are facts of the wire."""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest

from mcphost.testing import ACCEPT_HEADERS, RunningDaemon, initialize_request, stateless_request
from tests.sessionkit import open_session

CLOSE_WITHIN = 10.0
"""Seconds a connection may stay open after its response; a generous bound on "closes"."""
BODY_TIMEOUT = 1.0
KEEP_ALIVE_TIMEOUT = 2.0


@pytest.fixture(scope="module")
def daemon(module_daemon: Callable[..., RunningDaemon]) -> RunningDaemon:
    return module_daemon({"server": {"body_timeout": BODY_TIMEOUT}, "plugins": {"enable": ["echo"]}})


@pytest.fixture(scope="module")
def session(daemon: RunningDaemon) -> str:
    with httpx.Client(timeout=10) as http:
        opened = http.post(daemon.url, json=initialize_request(), headers=ACCEPT_HEADERS)
        session_id = opened.headers["mcp-session-id"]
        headers = {**ACCEPT_HEADERS, "mcp-session-id": session_id, "mcp-protocol-version": "2025-11-25"}
        http.post(daemon.url, json={"jsonrpc": "2.0", "method": "notifications/initialized"}, headers=headers)
    return session_id


def raw_request(method: str, path: str, headers: dict[str, str], body: bytes = b"") -> bytes:
    lines = [f"{method} {path} HTTP/1.1", *(f"{k}: {v}" for k, v in headers.items())]
    if body:
        lines.append(f"content-length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


def until_closed(sock: socket.socket, within: float) -> tuple[bytes, bool]:
    """What the server sent, and whether it closed the connection within ``within`` seconds."""
    received = b""
    deadline = time.monotonic() + within
    while (left := deadline - time.monotonic()) > 0:
        sock.settimeout(left)
        try:
            chunk = sock.recv(65536)
        except TimeoutError:
            break
        except ConnectionResetError:
            return received, True
        if not chunk:
            return received, True
        received += chunk
    return received, False


@pytest.fixture
def connect(daemon: RunningDaemon) -> Iterator[Callable[[], socket.socket]]:
    opened: list[socket.socket] = []

    def factory() -> socket.socket:
        sock = socket.create_connection(("127.0.0.1", daemon.port), timeout=10)
        opened.append(sock)
        return sock

    yield factory
    for sock in opened:
        sock.close()


def requests(port: int, session: str) -> dict[str, tuple[str, dict[str, str], Any]]:
    """Requests along each path the daemon answers on, each asking for Connection: close."""
    host = {"host": f"127.0.0.1:{port}", "connection": "close"}
    legacy = {**host, **ACCEPT_HEADERS, "mcp-session-id": session, "mcp-protocol-version": "2025-11-25"}
    found: dict[str, tuple[str, dict[str, str], Any]] = {}
    for method, params in [
        ("tools/list", {}),
        ("tools/call", {"name": "echo_echo", "arguments": {"text": "x"}}),
        ("resources/list", {}),
        ("prompts/get", {"name": "echo_review", "arguments": {"subject": "x"}}),
        ("ping", {}),
    ]:
        body, headers = stateless_request(method, params)
        found[f"2026-07-28 {method}"] = ("POST", {**host, **headers}, body)
    found["2026-07-28 malformed"] = ("POST", {**host, **stateless_request("tools/list")[1]}, "{")
    found["initialize"] = ("POST", {**host, **ACCEPT_HEADERS}, initialize_request())
    call = {"jsonrpc": "2.0", "id": 5, "method": "tools/call", "params": {"name": "echo_echo", "arguments": {}}}
    found["2025-11-25 tools/call"] = ("POST", legacy, call)
    found["2025-11-25 resources/list"] = ("POST", legacy, {"jsonrpc": "2.0", "id": 6, "method": "resources/list"})
    found["unknown session"] = (
        "POST",
        {**legacy, "mcp-session-id": "nope"},
        {"jsonrpc": "2.0", "id": 7, "method": "ping"},
    )
    found["/health"] = ("GET", host, None)
    return found


CASES = list(requests(0, "").keys())


@pytest.mark.parametrize("case", CASES)
def test_connection_close_ends_the_connection_after_the_response(
    daemon: RunningDaemon, session: str, connect: Callable[[], socket.socket], case: str
) -> None:
    method, headers, body = requests(daemon.port, session)[case]
    payload = b"" if body is None else body.encode() if isinstance(body, str) else json.dumps(body).encode()
    path = "/health" if case == "/health" else "/mcp"
    sock = connect()
    sock.sendall(raw_request(method, path, headers, payload))
    received, closed = until_closed(sock, CLOSE_WITHIN)
    assert received.startswith(b"HTTP/1.1 "), received[:200]
    assert closed, f"{case}: still open {CLOSE_WITHIN:g}s after its response: {received[:300]!r}"


def test_a_body_that_trickles_in_is_cut_off_with_408(
    daemon: RunningDaemon, connect: Callable[[], socket.socket]
) -> None:
    body, headers = stateless_request("tools/list")
    payload = json.dumps(body).encode()
    sock = connect()
    head = raw_request("POST", "/mcp", {"host": f"127.0.0.1:{daemon.port}", **headers}, payload)
    sock.sendall(head[: -len(payload)] + payload[:5])  # the headers, then five bytes of the body
    received, closed = until_closed(sock, BODY_TIMEOUT + CLOSE_WITHIN)
    assert received.startswith(b"HTTP/1.1 408"), received[:300]
    assert b"Request body not received within 1s" in received
    assert closed
    # Meanwhile and afterwards the daemon serves everyone else.
    assert daemon.get("/health")[0] == 200


@pytest.fixture(scope="module")
def brief(module_daemon: Callable[..., RunningDaemon]) -> RunningDaemon:
    """A daemon that closes a connection after 2 idle seconds."""
    return module_daemon({"server": {"keep_alive_timeout": KEEP_ALIVE_TIMEOUT}, "plugins": {"enable": ["echo"]}})


def test_headers_that_trickle_in_are_cut_off(brief: RunningDaemon) -> None:
    # [server] keep_alive_timeout bounds the time from connecting to a whole request line and
    # headers (Hypercorn's idle timer, which bytes of an unfinished request do not reset).
    with socket.create_connection(("127.0.0.1", brief.port), timeout=10) as sock:
        sock.sendall(f"POST /mcp HTTP/1.1\r\nhost: 127.0.0.1:{brief.port}\r\n".encode())
        started = time.monotonic()
        closed = False
        while not closed and time.monotonic() - started < KEEP_ALIVE_TIMEOUT + CLOSE_WITHIN:
            try:
                sock.sendall(b"x-slow: 1\r\n")
            except (BrokenPipeError, ConnectionResetError):
                closed = True
                break
            _, closed = until_closed(sock, 0.5)
    assert closed


def test_a_stream_the_server_ends_leaves_its_connection_idle_and_timed(brief: RunningDaemon) -> None:
    # The session's event stream ends under the client (its session deleted from another
    # connection): the response ends whole, and the connection then closes after
    # keep_alive_timeout like any idle one, however long the client would keep it.
    session = open_session(brief.url)
    stream_headers = {
        "host": f"127.0.0.1:{brief.port}",
        "accept": "text/event-stream",
        **{k: v for k, v in session.items() if k.startswith("mcp-")},
    }
    with socket.create_connection(("127.0.0.1", brief.port), timeout=10) as sock:
        sock.sendall(raw_request("GET", "/mcp", stream_headers))
        assert sock.recv(65536).startswith(b"HTTP/1.1 200")
        assert httpx.delete(brief.url, headers=session).status_code == 200
        received, closed = until_closed(sock, KEEP_ALIVE_TIMEOUT + CLOSE_WITHIN)
    assert received.endswith(b"0\r\n\r\n"), received[-200:]
    assert closed, f"still open {KEEP_ALIVE_TIMEOUT + CLOSE_WITHIN:g}s after its stream ended"
