"""Several replicas sharing one Redis (``[state] backend = "redis"``): sessions, rate-limit
budgets and resumable streams follow the client from one replica to another, and an outage of
Redis makes replicas not ready without hanging anything, until Redis is back."""

from __future__ import annotations

import json
import secrets
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from mcphost.testing import (
    ACCEPT_HEADERS,
    RunningDaemon,
    initialize_request,
    sse_events,
    start_daemon,
    stateless_request,
)
from tests.authkit import api_key, bearer
from tests.services import RedisServer, redis_server

LIMITED = api_key("limited", ["*"], rate_limit="4/minute")
FREE = api_key("free", ["*"])


def replica_config(redis: RedisServer, secret: Path, timeout: float) -> dict[str, Any]:
    return {
        "plugins": {"enable": ["echo"]},
        "state": {"backend": "redis", "redis_url": redis.url, "timeout": timeout},
        "sessions": {"secret_file": str(secret)},
        "auth": {"keys": {k.name: k.entry for k in (LIMITED, FREE)}},
    }


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[RedisServer, list[RunningDaemon]]]:
    """Redis and two replicas sharing it and the session secret."""
    workdir = tmp_path_factory.mktemp("replicas")
    secret = workdir / "session-secret"
    secret.write_text(secrets.token_hex(32))
    with redis_server() as redis:
        # A timeout a loaded machine cannot exceed by accident: a replica's collector settling
        # a second after start-up can hold its event loop over half a second there, and a
        # Redis call waiting out that pause counts as an outage (the outage test below keeps
        # a short timeout, for a prompt 503).
        replicas = [start_daemon(workdir, replica_config(redis, secret, timeout=3.0)) for _ in range(2)]
        try:
            yield redis, replicas
        finally:
            for replica in replicas:
                replica.stop()


def rpc(method: str, params: dict[str, Any] | None = None, request_id: int = 2) -> dict[str, Any]:
    return {"jsonrpc": "2.0", "id": request_id, "method": method, "params": params or {}}


def result_of(response: httpx.Response) -> dict[str, Any]:
    if response.headers["content-type"].startswith("application/json"):
        return response.json()
    return next(m for _, m in sse_events(response.iter_lines()) if m is not None and "id" in m)


def open_session(replica: RunningDaemon, token: str) -> dict[str, str]:
    response = httpx.post(replica.url, json=initialize_request(), headers={**ACCEPT_HEADERS, **bearer(token)})
    assert response.status_code == 200, response.text
    headers = {
        **ACCEPT_HEADERS,
        **bearer(token),
        "mcp-session-id": response.headers["mcp-session-id"],
        "mcp-protocol-version": "2025-11-25",
    }
    initialized = {"jsonrpc": "2.0", "method": "notifications/initialized"}
    assert httpx.post(replica.url, json=initialized, headers=headers).status_code == 202
    return headers


def test_a_session_goes_on_on_another_replica_and_a_rate_budget_is_shared(
    cluster: tuple[RedisServer, list[RunningDaemon]],
) -> None:
    _, (a, b) = cluster
    headers = open_session(a, FREE.token)
    echo = rpc("tools/call", {"name": "echo_echo", "arguments": {"text": "hi"}})
    for replica in (b, a, b):
        response = httpx.post(replica.url, json=echo, headers=headers)
        assert response.status_code == 200, response.text
        assert result_of(response)["result"]["structuredContent"] == {"result": "hi"}
    b.wait_for_log(lambda r: r.get("event") == "session rebuilt")

    # 4 a minute in total, however the requests are spread (opening took two of them).
    limited = open_session(b, LIMITED.token)
    statuses = [httpx.post(r.url, json=rpc("tools/list"), headers=limited).status_code for r in (a, b, a, b)]
    assert statuses == [200, 200, 429, 429]


def test_a_broken_stream_resumes_on_another_replica(cluster: tuple[RedisServer, list[RunningDaemon]]) -> None:
    _, (a, b) = cluster
    headers = open_session(a, FREE.token)
    call = rpc("tools/call", {"name": "echo_slow", "arguments": {"seconds": 1.0}, "_meta": {"progressToken": "p"}})
    seen: list[str] = []
    with httpx.Client(timeout=10) as client, client.stream("POST", a.url, json=call, headers=headers) as response:
        for event_id, message in sse_events(response.iter_lines()):
            seen.append(event_id)  # type: ignore[arg-type]
            if message is not None:
                break  # the stream breaks after the first progress notification
    time.sleep(1.2)  # the call finishes on a meanwhile, its events kept in Redis
    resume = {**headers, "accept": "text/event-stream", "last-event-id": seen[-1]}
    got: list[dict[str, Any]] = []
    with httpx.Client(timeout=10) as client, client.stream("GET", b.url, headers=resume) as response:
        assert response.status_code == 200
        for _, message in sse_events(response.iter_lines()):
            if message is not None:
                got.append(message)
                if "id" in message:
                    break
    assert [m["params"]["progress"] for m in got[:-1]] == list(range(2, 11))
    assert got[-1]["result"]["structuredContent"] == {"result": "slept 1.0"}


def test_stateless_requests_are_served_by_any_replica(cluster: tuple[RedisServer, list[RunningDaemon]]) -> None:
    _, replicas = cluster
    body, headers = stateless_request("tools/call", {"name": "echo_echo", "arguments": {"text": "x"}})
    for replica in replicas:
        response = httpx.post(replica.url, json=body, headers={**headers, **bearer(FREE.token)})
        assert response.status_code == 200
        assert result_of(response)["result"]["structuredContent"] == {"result": "x"}


def test_while_redis_hangs_replicas_are_not_ready_and_recover_by_themselves(tmp_path: Path) -> None:
    secret = tmp_path / "session-secret"
    secret.write_text(secrets.token_hex(32))
    with redis_server() as redis:
        a, b = (start_daemon(tmp_path, replica_config(redis, secret, timeout=0.3)) for _ in range(2))
        try:
            headers = open_session(a, FREE.token)
            # Hung rather than stopped: the harder case (every call must time out, not fail
            # at once), and Redis keeps what it held for when it answers again.
            redis.freeze()
            for replica in (a, b):
                wait_for_status(replica, "/ready", 503)
                detail = json.loads(replica.get("/ready", admin=True)[1])
                assert detail["state"]["available"] is False and detail["state"]["error"]

            # A session b never held: b cannot tell whether it exists, so 503, at once.
            started = time.monotonic()
            response = httpx.post(b.url, json=rpc("tools/list"), headers=headers)
            assert response.status_code == 503 and response.json()["error"]["code"] == -32004
            assert time.monotonic() - started < 1
            # What needs no sharing goes on: the session a holds, new sessions, stateless requests.
            assert httpx.post(a.url, json=rpc("tools/list"), headers=headers).status_code == 200
            opened_during = open_session(b, FREE.token)
            body, stateless = stateless_request("tools/list")
            assert httpx.post(b.url, json=body, headers={**stateless, **bearer(FREE.token)}).status_code == 200

            redis.thaw()
            for replica in (a, b):
                wait_for_status(replica, "/ready", 200)
            assert httpx.post(b.url, json=rpc("tools/list"), headers=headers).status_code == 200
            # The session b opened while Redis hung was recorded once Redis answered: a has it.
            assert httpx.post(a.url, json=rpc("tools/list"), headers=opened_during).status_code == 200
            # One line per change of state, however many requests met the outage.
            unavailable = [r for r in b.log_records() if r["event"].startswith("shared state unavailable")]
            available = [r for r in b.log_records() if r["event"] == "shared state available"]
            assert len(unavailable) == 1 and unavailable[0]["error"]
            assert len(available) == 2  # at start-up, and after the outage
        finally:
            a.stop()
            b.stop()


def wait_for_status(replica: RunningDaemon, path: str, status: int, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while (got := replica.get(path)[0]) != status:
        assert time.monotonic() < deadline, f"{path} still answers {got}, not {status}"
        time.sleep(0.05)
