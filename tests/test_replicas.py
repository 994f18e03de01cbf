"""Several replicas sharing one Redis (``[state] backend = "redis"``): sessions, rate-limit
budgets and resumable streams follow the client from one replica to another, and an outage of
Redis makes replicas not ready without hanging anything, until Redis is back."""

from __future__ import annotations

import contextlib
import json
import secrets
import time
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from mcphost.testing import RunningDaemon, sse_events, start_daemon, stateless_request, to_toml
from tests.authkit import api_key, bearer
from tests.services import RedisServer, redis_server
from tests.sessionkit import open_session, result_of, rpc, update_reaches_stream

LIMITED = api_key("limited", ["*"], rate_limit="4/minute")
FREE = api_key("free", ["*"])
LEAVING = api_key("leaving", ["*"])
GREETING = "echo://greeting"


def replica_config(redis: RedisServer, secret: Path, timeout: float) -> dict[str, Any]:
    return {
        "plugins": {"enable": ["echo", "features"]},
        "state": {"backend": "redis", "redis_url": redis.url, "timeout": timeout},
        "sessions": {"secret_file": str(secret)},
        "auth": {"keys": {k.name: k.entry for k in (LIMITED, FREE, LEAVING)}},
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


@contextlib.contextmanager
def two_replicas(
    workdir: Path, timeout: float, **config: Any
) -> Iterator[tuple[RedisServer, RunningDaemon, RunningDaemon]]:
    """Redis and two replicas of a test's own (one it stops, or Redis it stops), sharing it
    and a session secret; ``config`` adds tables to theirs."""
    secret = workdir / "session-secret"
    secret.write_text(secrets.token_hex(32))
    with redis_server() as redis:
        a, b = (start_daemon(workdir, {**replica_config(redis, secret, timeout), **config}) for _ in range(2))
        try:
            yield redis, a, b
        finally:
            a.stop()
            b.stop()


def test_a_session_goes_on_on_another_replica_and_a_rate_budget_is_shared(
    cluster: tuple[RedisServer, list[RunningDaemon]],
) -> None:
    _, (a, b) = cluster
    headers = open_session(a.url, bearer(FREE.token))
    echo = rpc("tools/call", {"name": "echo_echo", "arguments": {"text": "hi"}})
    for replica in (b, a, b):
        response = httpx.post(replica.url, json=echo, headers=headers)
        assert response.status_code == 200, response.text
        assert result_of(response)["result"]["structuredContent"] == {"result": "hi"}
    b.wait_for_log(lambda r: r.get("event") == "session rebuilt")

    # 4 a minute in total, however the requests are spread (opening took two of them).
    limited = open_session(b.url, bearer(LIMITED.token))
    statuses = [httpx.post(r.url, json=rpc("tools/list"), headers=limited).status_code for r in (a, b, a, b)]
    assert statuses == [200, 200, 429, 429]


def test_a_broken_stream_resumes_on_another_replica(cluster: tuple[RedisServer, list[RunningDaemon]]) -> None:
    _, (a, b) = cluster
    headers = open_session(a.url, bearer(FREE.token))
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


def test_a_resumed_stream_goes_on_live_on_another_replica(cluster: tuple[RedisServer, list[RunningDaemon]]) -> None:
    """The stream breaks while the call runs on a; resumed on b, it replays what was missed,
    then goes on delivering the call's progress and its result as a produces them."""
    _, (a, b) = cluster
    headers = open_session(a.url, bearer(FREE.token))
    call = rpc("tools/call", {"name": "echo_slow", "arguments": {"seconds": 3.0}, "_meta": {"progressToken": "p"}})
    with httpx.Client(timeout=10) as client, client.stream("POST", a.url, json=call, headers=headers) as response:
        last = next(event_id for event_id, message in sse_events(response.iter_lines()) if message is not None)
    resume = {**headers, "accept": "text/event-stream", "last-event-id": last}
    got: list[dict[str, Any]] = []
    # A read timeout, not a hang, if the stream stops after the replay.
    with httpx.Client(timeout=10) as client, client.stream("GET", b.url, headers=resume) as response:
        assert response.status_code == 200
        got = [message for _, message in sse_events(response.iter_lines()) if message is not None]
    assert [m["params"]["progress"] for m in got[:-1]] == list(range(2, 11)), got
    assert got[-1]["result"]["structuredContent"] == {"result": "slept 3.0"}


def test_a_delete_ends_the_session_on_every_replica_at_once(cluster: tuple[RedisServer, list[RunningDaemon]]) -> None:
    _, (a, b) = cluster
    for _ in range(3):
        headers = open_session(a.url, bearer(FREE.token))
        assert httpx.post(b.url, json=rpc("tools/list"), headers=headers).status_code == 200  # b holds it too
        stream_headers = {**headers, "accept": "text/event-stream"}
        with httpx.Client(timeout=10) as client, client.stream("GET", b.url, headers=stream_headers) as stream:
            assert stream.status_code == 200
            assert httpx.delete(a.url, headers=headers).status_code == 200
            after = httpx.post(b.url, json=rpc("tools/list", request_id=7), headers=headers)
            assert after.status_code == 404
            assert after.json()["id"] == 7  # the request's id, not null
            for _ in stream.iter_bytes():  # b's event stream ends (a read timeout if it stays open)
                pass


def test_a_key_removed_on_one_replica_ends_its_sessions_on_every_replica(
    cluster: tuple[RedisServer, list[RunningDaemon]],
) -> None:
    """Only a reloads without the key: b, which still takes it, answers its sessions 404 too
    (and ends their event streams), since a's reload deleted them as a DELETE does."""
    _, (a, b) = cluster
    headers = open_session(b.url, bearer(LEAVING.token))
    assert httpx.post(a.url, json=rpc("tools/list"), headers=headers).status_code == 200  # a holds it too
    original = a.config_path.read_text()
    stream_headers = {**headers, "accept": "text/event-stream"}
    try:
        with httpx.Client(timeout=10) as client, client.stream("GET", b.url, headers=stream_headers) as stream:
            assert stream.status_code == 200
            config = tomllib.loads(original)
            del config["auth"]["keys"][LEAVING.name]
            a.config_path.write_text(to_toml(config))
            reloaded = a.reload()
            assert (reloaded["keys_removed"], reloaded["sessions_ended"]) == (1, 1), reloaded
            for _ in stream.iter_bytes():  # b's event stream ends (a read timeout if it stays open)
                pass
        after = httpx.post(b.url, json=rpc("tools/list", request_id=8), headers=headers)
        assert after.status_code == 404 and after.json()["id"] == 8
        open_session(b.url, bearer(LEAVING.token))  # b still takes the key: only what a ended is gone
    finally:
        a.config_path.write_text(original)
        assert a.reload()["event"] == "reloaded"


def test_a_session_idle_on_one_replica_lives_while_used_on_another(tmp_path: Path) -> None:
    """b's copy idles out while the client works on a: b drops its copy and the record stays,
    so b serves the session again later; once idle everywhere, it expires everywhere."""
    with two_replicas(tmp_path, timeout=3.0, server={"session_idle_timeout": 2}) as (_, a, b):
        headers = open_session(a.url, bearer(FREE.token))
        assert httpx.post(b.url, json=rpc("tools/list"), headers=headers).status_code == 200
        busy_until = time.monotonic() + 4
        while time.monotonic() < busy_until:
            assert httpx.post(a.url, json=rpc("tools/list"), headers=headers).status_code == 200
            time.sleep(0.3)
        b.wait_for_log(lambda r: r.get("event") == "session idle timeout")
        assert httpx.post(b.url, json=rpc("tools/list"), headers=headers).status_code == 200
        time.sleep(3.5)  # idle everywhere for longer than the record lives (2.5 s)
        assert [httpx.post(r.url, json=rpc("tools/list"), headers=headers).status_code for r in (a, b)] == [
            404,
            404,
        ]


def subscribe(url: str, headers: dict[str, str], uri: str) -> None:
    response = httpx.post(url, json=rpc("resources/subscribe", {"uri": uri}), headers=headers)
    assert response.status_code == 200 and result_of(response)["result"] == {}, response.text


@pytest.mark.parametrize(
    ("stream_on", "announced_on"),
    [(0, 0), (0, 1), (1, 0), (1, 1)],
    ids=["stream-here-announced-here", "stream-here-announced-there", "stream-there-announced-here", "both-there"],
)
def test_a_subscription_hears_updates_wherever_announced_and_wherever_its_stream_is(
    cluster: tuple[RedisServer, list[RunningDaemon]], stream_on: int, announced_on: int
) -> None:
    """The session subscribes on a while b holds a copy of it too; its event stream is held by
    a or b, and the update is announced on a or b (by a tool call, on another connection)."""
    _, replicas = cluster
    a, b = replicas
    headers = open_session(a.url, bearer(FREE.token))
    assert httpx.post(b.url, json=rpc("tools/list"), headers=headers).status_code == 200
    subscribe(a.url, headers, GREETING)
    stream, announcer = replicas[stream_on].url, replicas[announced_on].url
    with httpx.Client(timeout=30) as streaming, httpx.Client(timeout=30) as calling:
        update_reaches_stream((streaming, stream), (calling, stream), (calling, announcer), headers, GREETING)


def test_a_subscription_moves_with_its_session(tmp_path: Path) -> None:
    """The replica that took the subscription stops; the session goes on on the other, whose
    plugins' updates of the resource reach it there."""
    with two_replicas(tmp_path, timeout=3.0) as (_, a, b):
        headers = open_session(a.url, bearer(FREE.token))
        subscribe(a.url, headers, GREETING)
        assert a.stop() == 0
        with httpx.Client(timeout=30) as streaming, httpx.Client(timeout=30) as calling:
            update_reaches_stream((streaming, b.url), (calling, b.url), (calling, b.url), headers, GREETING)
        b.wait_for_log(lambda r: r.get("event") == "session rebuilt")


def test_stateless_requests_are_served_by_any_replica(cluster: tuple[RedisServer, list[RunningDaemon]]) -> None:
    _, replicas = cluster
    body, headers = stateless_request("tools/call", {"name": "echo_echo", "arguments": {"text": "x"}})
    for replica in replicas:
        response = httpx.post(replica.url, json=body, headers={**headers, **bearer(FREE.token)})
        assert response.status_code == 200
        assert result_of(response)["result"]["structuredContent"] == {"result": "x"}


def test_while_redis_hangs_replicas_are_not_ready_and_recover_by_themselves(tmp_path: Path) -> None:
    with two_replicas(tmp_path, timeout=0.3) as (redis, a, b):
        headers = open_session(a.url, bearer(FREE.token))
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
        opened_during = open_session(b.url, bearer(FREE.token))
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


def wait_for_status(replica: RunningDaemon, path: str, status: int, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while (got := replica.get(path)[0]) != status:
        assert time.monotonic() < deadline, f"{path} still answers {got}, not {status}"
        time.sleep(0.05)
