"""2025-11-25 sessions over Streamable HTTP: the handshake and version negotiation, the GET
stream, DELETE, idle expiry and the session cap."""

from __future__ import annotations

import json
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from mcphost.testing import RunningDaemon
from tests import sessionkit

ACCEPT = {"Accept": "application/json, text/event-stream", "Content-Type": "application/json"}


def initialize_body(version: str = "2025-11-25") -> dict:
    return {
        "jsonrpc": "2.0",
        "id": 1,
        "method": "initialize",
        "params": {"protocolVersion": version, "capabilities": {}, "clientInfo": {"name": "t", "version": "1"}},
    }


def initialize(daemon: RunningDaemon, version: str = "2025-11-25") -> httpx.Response:
    return httpx.post(daemon.url, json=initialize_body(version), headers=ACCEPT)


def sse_json(response: httpx.Response) -> dict:
    """The JSON-RPC message of a response, whether sent as JSON or as one SSE event."""
    if response.headers["content-type"].startswith("application/json"):
        return response.json()
    data = [line[5:].strip() for line in response.text.splitlines() if line.startswith("data:")]
    return json.loads(next(d for d in data if d))


def open_session(daemon: RunningDaemon) -> dict[str, str]:
    response = initialize(daemon)
    session = response.headers["mcp-session-id"]
    headers = {**ACCEPT, "Mcp-Session-Id": session, "MCP-Protocol-Version": "2025-11-25"}
    ack = httpx.post(daemon.url, json={"jsonrpc": "2.0", "method": "notifications/initialized"}, headers=headers)
    assert ack.status_code == 202
    return headers


@pytest.fixture(scope="module")
def daemon(module_daemon) -> RunningDaemon:
    return module_daemon({"plugins": {"enable": ["echo"]}, "server": {"max_sessions": 3, "session_idle_timeout": 2}})


@pytest.mark.parametrize("version", ["2024-11-05", "2025-03-26", "2025-06-18", "2025-11-25"])
def test_handshake_versions_are_negotiated(daemon: RunningDaemon, version: str) -> None:
    response = initialize(daemon, version)
    assert response.status_code == 200
    result = sse_json(response)["result"]
    assert result["protocolVersion"] == version
    assert result["serverInfo"]["name"] == "mcphost"
    assert "tools" in result["capabilities"]
    httpx.delete(daemon.url, headers={"Mcp-Session-Id": response.headers["mcp-session-id"]})


def test_unknown_version_gets_the_latest_handshake_version(daemon: RunningDaemon) -> None:
    response = initialize(daemon, "2023-01-01")
    assert sse_json(response)["result"]["protocolVersion"] == "2025-11-25"
    httpx.delete(daemon.url, headers={"Mcp-Session-Id": response.headers["mcp-session-id"]})


def test_delete_ends_the_session(daemon: RunningDaemon) -> None:
    headers = open_session(daemon)
    call = {"jsonrpc": "2.0", "id": 2, "method": "tools/list"}
    assert httpx.post(daemon.url, json=call, headers=headers).status_code == 200
    assert httpx.delete(daemon.url, headers=headers).status_code == 200
    assert httpx.post(daemon.url, json=call, headers=headers).status_code == 404


async def test_get_opens_the_server_event_stream(daemon: RunningDaemon) -> None:
    headers = {**open_session(daemon), "Accept": "text/event-stream"}
    async with httpx.AsyncClient() as client:
        async with client.stream("GET", daemon.url, headers=headers) as stream:
            assert stream.status_code == 200
            assert stream.headers["content-type"].startswith("text/event-stream")
        await client.delete(daemon.url, headers=headers)


def test_idle_sessions_expire(daemon: RunningDaemon) -> None:
    headers = open_session(daemon)
    call = {"jsonrpc": "2.0", "id": 2, "method": "tools/list"}
    status = 200
    for _ in range(4):  # session_idle_timeout is 2 s (the record lives 2.5 s): stay idle past it, then ask
        time.sleep(3)
        status = httpx.post(daemon.url, json=call, headers=headers).status_code
        if status == 404:
            break
    assert status == 404


def test_session_cap_refuses_one_more(daemon: RunningDaemon) -> None:
    opened = [open_session(daemon) for _ in range(3)]
    refused = initialize(daemon)
    assert refused.status_code == 503
    assert refused.json()["error"]["code"] == -32004
    assert int(refused.headers["retry-after"]) > 0
    httpx.delete(daemon.url, headers=opened[0])
    assert initialize(daemon).status_code == 200
    for headers in opened[1:]:
        httpx.delete(daemon.url, headers=headers)


def test_refusals_name_the_request_id(daemon: RunningDaemon) -> None:
    """A 404 for a session that is gone and a 503 at the session cap carry the request's id."""
    headers = open_session(daemon)
    assert httpx.delete(daemon.url, headers=headers).status_code == 200
    gone = httpx.post(daemon.url, json={"jsonrpc": "2.0", "id": "call-7", "method": "tools/list"}, headers=headers)
    assert gone.status_code == 404 and gone.json()["id"] == "call-7"
    assert gone.headers["content-length"] == str(len(gone.content))
    opened = []
    while (answer := httpx.post(daemon.url, json={**initialize_body(), "id": 41}, headers=ACCEPT)).status_code == 200:
        assert len(opened) < 3, "max_sessions is 3"
        opened.append({**ACCEPT, "Mcp-Session-Id": answer.headers["mcp-session-id"]})
    assert answer.status_code == 503 and answer.json()["id"] == 41
    for session in opened:
        httpx.delete(daemon.url, headers=session)


def test_a_delete_racing_a_notification_never_fails_it(mcphost_daemon) -> None:
    # The client may send DELETE as soon as it has the notification's 202. The SDK answered
    # 202 before handing the notification to the session, so a DELETE arriving meanwhile made
    # that hand-off fail, and the SDK tried to answer the same request again with 500.
    daemon = mcphost_daemon({"plugins": {"enable": ["echo"]}, "sessions": {"store": "none"}})
    initialized = {"jsonrpc": "2.0", "method": "notifications/initialized"}

    def lifecycle(_: int) -> list[int]:
        statuses = []
        with httpx.Client(timeout=30) as client:
            for _ in range(40):
                session = sessionkit.open_session(daemon.url, client=client)
                statuses.append(client.post(daemon.url, json=initialized, headers=session).status_code)
                statuses.append(client.delete(daemon.url, headers=session).status_code)
        return statuses

    with ThreadPoolExecutor(25) as pool:
        statuses = [s for run in pool.map(lifecycle, range(25)) for s in run]
    assert set(statuses) <= {200, 202}, statuses
    logged = [r for r in daemon.log_records() if r.get("status") == 500 or "Error" in str(r.get("event"))]
    assert not logged, logged


def batch_session(daemon: RunningDaemon) -> dict[str, str]:
    """A 2025-03-26 session; its clients send no MCP-Protocol-Version header."""
    response = initialize(daemon, "2025-03-26")
    assert sse_json(response)["result"]["protocolVersion"] == "2025-03-26"
    headers = {**ACCEPT, "Mcp-Session-Id": response.headers["mcp-session-id"]}
    ack = httpx.post(daemon.url, json={"jsonrpc": "2.0", "method": "notifications/initialized"}, headers=headers)
    assert ack.status_code == 202
    return headers


def add(request_id: int, a: int) -> dict:
    return {
        "jsonrpc": "2.0",
        "id": request_id,
        "method": "tools/call",
        "params": {"name": "echo_add", "arguments": {"a": a, "b": 1}},
    }


def test_a_2025_03_26_session_takes_batches(daemon: RunningDaemon) -> None:
    headers = batch_session(daemon)
    ping = {"jsonrpc": "2.0", "method": "notifications/roots/list_changed"}
    initialize_again = {**initialize_body("2025-03-26"), "id": 9}
    response = httpx.post(daemon.url, json=[add(1, 1), ping, add(2, 41), initialize_again, 7], headers=headers)
    assert response.status_code == 200, response.text
    messages = [
        json.loads(line[5:]) for line in response.text.splitlines() if line.startswith("data:") and line[5:].strip()
    ]
    by_id = {m.get("id"): m for m in messages}
    assert by_id[1]["result"]["structuredContent"]["total"] == 2
    assert by_id[2]["result"]["structuredContent"]["total"] == 42
    assert by_id[9]["error"]["code"] == -32600  # initialize may not be batched
    assert by_id[None]["error"]["code"] == -32600  # 7 is no JSON-RPC message
    assert len(messages) == 4

    notifications = httpx.post(daemon.url, json=[ping, ping], headers=headers)
    assert notifications.status_code == 202 and notifications.content == b""
    assert httpx.post(daemon.url, json=[], headers=headers).json()["error"]["code"] == -32600


def test_later_revisions_refuse_batches(daemon: RunningDaemon) -> None:
    response = httpx.post(daemon.url, json=[add(1, 1)], headers=open_session(daemon))
    assert response.status_code == 400
    assert response.json()["error"]["code"] == -32600
