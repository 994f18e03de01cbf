"""Raw HTTP for 2025-11-25 sessions, for tests that must choose where each request lands
(a replica, or a fresh connection so the kernel may hand it to another worker)."""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from typing import Any

import httpx

from mcphost.testing import ACCEPT_HEADERS, initialize_request


def rpc(method: str, params: dict[str, Any] | None = None, request_id: int = 2) -> dict[str, Any]:
    """A JSON-RPC request."""
    return {"jsonrpc": "2.0", "id": request_id, "method": method, "params": params or {}}


def events(response: httpx.Response) -> Iterator[tuple[str | None, dict[str, Any] | None]]:
    """(event id, JSON-RPC message or None for a priming event) of an SSE response, as they arrive."""
    event_id, data = None, ""
    for line in response.iter_lines():
        if line.startswith("id:"):
            event_id = line[3:].strip()
        elif line.startswith("data:"):
            data += line[5:].strip()
        elif line == "" and (event_id is not None or data):
            yield event_id, json.loads(data) if data else None
            event_id, data = None, ""


def result_of(response: httpx.Response) -> dict[str, Any]:
    """The JSON-RPC response of a POST, answered as JSON or as an SSE stream."""
    if response.headers["content-type"].startswith("application/json"):
        return response.json()  # type: ignore[no-any-return]
    return next(m for _, m in events(response) if m is not None and "id" in m)


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
