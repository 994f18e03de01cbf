"""Raw HTTP for 2025-11-25 sessions, for tests that must choose where each request lands
(a replica, or a fresh connection so the kernel may hand it to another worker)."""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Mapping
from typing import Any

import httpx

from mcphost.testing import ACCEPT_HEADERS, initialize_request, sse_events


def rpc(method: str, params: dict[str, Any] | None = None, request_id: int = 2) -> dict[str, Any]:
    """A JSON-RPC request."""
    return {"jsonrpc": "2.0", "id": request_id, "method": method, "params": params or {}}


def result_of(response: httpx.Response) -> dict[str, Any]:
    """The JSON-RPC response of a POST, answered as JSON or as an SSE stream."""
    if response.headers["content-type"].startswith("application/json"):
        return response.json()  # type: ignore[no-any-return]
    return next(m for _, m in sse_events(response.iter_lines()) if m is not None and "id" in m)


def open_session(
    url: str, headers: Mapping[str, str] | None = None, client: httpx.Client | None = None
) -> dict[str, str]:
    """Initialize a session at ``url`` (with ``client``, else each request on a connection of
    its own); the headers of its later requests."""
    post = client.post if client is not None else httpx.post
    response = post(url, json=initialize_request(), headers={**ACCEPT_HEADERS, **(headers or {})})
    assert response.status_code == 200, response.text
    session = {
        **ACCEPT_HEADERS,
        **(headers or {}),
        "mcp-session-id": response.headers["mcp-session-id"],
        "mcp-protocol-version": "2025-11-25",
    }
    initialized = {"jsonrpc": "2.0", "method": "notifications/initialized"}
    assert post(url, json=initialized, headers=session).status_code == 202
    return session


def whoami(url: str, headers: Mapping[str, str], request_id: int = 2) -> httpx.Response:
    """``echo_whoami`` on a connection of its own (its result names the process that ran it)."""
    return httpx.post(url, json=rpc("tools/call", {"name": "echo_whoami"}, request_id), headers=dict(headers))


def announce(client: httpx.Client, url: str, headers: Mapping[str, str], uri: str) -> None:
    """Have the ``features`` plugin announce that the resource at ``uri`` changed, through
    ``client`` (on its connection, so on the process that holds it)."""
    call = rpc("tools/call", {"name": "features_announce", "arguments": {"uri": uri}})
    response = client.post(url, json=call, headers=dict(headers))
    assert response.status_code == 200, response.text
    assert not result_of(response)["result"].get("isError"), response.text


Via = tuple[httpx.Client, str]
"""A client and the URL it posts to: together, the process a request reaches."""


def update_reaches_stream(stream: Via, beside: Via, announcer: Via, headers: Mapping[str, str], uri: str) -> None:
    """The session's event stream, opened through ``stream``, carries
    ``notifications/resources/updated`` for ``uri`` when the change is announced once through
    ``announcer``. The stream counts as open once an announcement made through ``beside`` (the
    stream's process) reached it: a GET may be answered a moment before its stream takes messages."""
    heard: queue.Queue[str | BaseException] = queue.Queue()

    def listen() -> None:
        client, url = stream
        try:
            with client.stream("GET", url, headers={**headers, "accept": "text/event-stream"}) as response:
                assert response.status_code == 200, response.read()
                for _, message in sse_events(response.iter_lines()):
                    if message is not None and message.get("method") == "notifications/resources/updated":
                        heard.put(message["params"]["uri"])
        except BaseException as error:  # a read timeout after the test is done, or a failure
            heard.put(error)

    threading.Thread(target=listen, daemon=True).start()

    def next_update(timeout: float) -> str | None:
        try:
            got = heard.get(timeout=timeout)
        except queue.Empty:
            return None
        if isinstance(got, BaseException):
            raise AssertionError(f"the event stream failed: {got!r}")
        return got

    deadline = time.monotonic() + 10
    while next_update(0.5) != uri:
        assert time.monotonic() < deadline, f"no announcement through {beside[1]} reached its own stream"
        announce(*beside, headers, uri)
    while next_update(0.5) is not None:
        pass  # the later announcements of the opening, if they were heard too
    announce(*announcer, headers, uri)
    assert next_update(10) == uri, f"an update announced through {announcer[1]} did not reach the stream"
