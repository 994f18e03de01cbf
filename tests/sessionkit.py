"""Raw HTTP for 2025-11-25 sessions, for tests that must choose where each request lands
(a replica, or a fresh connection so the kernel may hand it to another worker)."""

from __future__ import annotations

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
