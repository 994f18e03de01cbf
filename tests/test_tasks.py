"""Tasks (the 2026-07-28 tasks extension) as a user of a long tool would meet them: a task
outlives a restart of the daemon and is collected after it, is polled and cancelled through
another replica, is reported failed when the process running it dies, is seen only by its
caller, expires after its retention, shows its progress, and gives back its concurrency slot
when cancelled. The wire shapes are the conformance suite's (tests/test_conformance.py).

Raw HTTP: the SDK's Python client has no client side of the tasks extension.
"""

from __future__ import annotations

import json
import secrets
import signal
import time
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import httpx
import pytest

from mcphost.testing import RunningDaemon, start_daemon, stateless_request
from tests.authkit import api_key, bearer
from tests.services import redis_server
from tests.sessionkit import open_session, result_of, rpc

EXTENSION = "io.modelcontextprotocol/tasks"
OWNER = api_key("owner", ["*"])
OTHER = api_key("other", ["*"])
KEYS = {"keys": {k.name: k.entry for k in (OWNER, OTHER)}}
PLUGINS = {"enable": ["conformance", "features"], "conformance": {"prefix": ""}, "features": {"prefix": ""}}


def request(
    daemon: RunningDaemon,
    method: str,
    params: dict[str, Any],
    token: str = OWNER.token,
    *,
    declare: bool = True,
) -> dict[str, Any]:
    """One 2026-07-28 request declaring the tasks extension (unless not ``declare``); its
    JSON-RPC response."""
    body, headers = stateless_request(method, params)
    if declare:
        body["params"]["_meta"]["io.modelcontextprotocol/clientCapabilities"] = {
            "extensions": {EXTENSION: {}},
            "elicitation": {},
        }
    if method.startswith("tasks/"):
        headers["mcp-name"] = params["taskId"]
    response = httpx.post(daemon.url, json=body, headers={**headers, **bearer(token)}, timeout=30)
    return result_of(response)


def start_task(daemon: RunningDaemon, tool: str, arguments: dict[str, Any], token: str = OWNER.token) -> str:
    """Call ``tool`` so that it becomes a task; its id."""
    result = request(daemon, "tools/call", {"name": tool, "arguments": arguments}, token)["result"]
    assert result["resultType"] == "task", result
    return str(result["taskId"])


def task(daemon: RunningDaemon, task_id: str, token: str = OWNER.token) -> dict[str, Any]:
    """``tasks/get``'s whole response (a result or an error)."""
    return request(daemon, "tasks/get", {"taskId": task_id}, token)


def poll(
    daemon: RunningDaemon, task_id: str, done: Callable[[dict[str, Any]], bool], timeout: float = 30.0
) -> dict[str, Any]:
    """Poll until ``done(response)``; fails after ``timeout`` seconds (a bound on "never", not a speed)."""
    deadline = time.monotonic() + timeout
    while True:
        response = task(daemon, task_id)
        if done(response):
            return response
        assert time.monotonic() < deadline, f"the task never got there: {response}"
        time.sleep(0.1)


def ended(response: Mapping[str, Any]) -> bool:
    return response.get("result", {}).get("status") in ("completed", "failed", "cancelled")


def config(**tables: Any) -> dict[str, Any]:
    return {"plugins": PLUGINS, "auth": KEYS, **tables}


def test_a_task_outlives_a_restart_and_is_collected_after_it(tmp_path: Path) -> None:
    state = tmp_path / "state"
    first = start_daemon(tmp_path, config(), state_dir=state)
    try:
        task_id = start_task(first, "slow_compute", {"seconds": 2, "label": "backup"})
    finally:
        # A stop lets calls in flight finish (the drain), tasks included.
        assert first.stop() == 0
    second = start_daemon(tmp_path, config(), state_dir=state)
    try:
        result = task(second, task_id)["result"]
        assert result["status"] == "completed", result
        assert result["result"]["content"] == [{"type": "text", "text": "computed backup in 2s"}]
        # Only its caller sees it: to anyone else it does not exist.
        error = task(second, task_id, OTHER.token)["error"]
        assert error["code"] == -32602
        assert request(second, "tasks/cancel", {"taskId": task_id}, OTHER.token)["error"]["code"] == -32602
    finally:
        second.stop()


def test_a_task_whose_process_died_is_reported_failed(tmp_path: Path) -> None:
    state = tmp_path / "state"
    tasks = {"lease": 1}
    first = start_daemon(tmp_path, config(tasks=tasks), state_dir=state)
    task_id = start_task(first, "slow_compute", {"seconds": 60})
    first.stop(signal.SIGKILL)
    second = start_daemon(tmp_path, config(tasks=tasks), state_dir=state)
    try:
        result = poll(second, task_id, ended)["result"]
        assert result["status"] == "failed"
        assert result["error"]["code"] == -32603
        assert "stopped before the task finished" in result["error"]["message"]
        assert "result" not in result
    finally:
        second.stop()


def test_a_finished_task_expires_after_its_retention(mcphost_daemon: Callable[..., RunningDaemon]) -> None:
    daemon = mcphost_daemon(config(tasks={"retention": 1}))
    task_id = start_task(daemon, "failing_job", {})
    result = poll(daemon, task_id, ended)["result"]
    # A tool error is a completed task whose result says so.
    assert result["status"] == "completed"
    assert result["result"]["isError"] is True
    assert result["ttlMs"] >= 1000
    error = poll(daemon, task_id, lambda r: "error" in r)["error"]
    assert error["code"] == -32602


def test_progress_shows_in_the_status_and_cancelling_frees_the_concurrency_slot(
    mcphost_daemon: Callable[..., RunningDaemon],
) -> None:
    plugins = {**PLUGINS, "conformance": {"prefix": "", "tools": {"slow_compute": {"max_concurrency": 1}}}}
    daemon = mcphost_daemon({"plugins": plugins, "auth": KEYS})
    report = start_task(daemon, "long_report", {"steps": 100})
    status = poll(daemon, report, lambda r: "statusMessage" in r["result"])["result"]
    assert status["status"] == "working"
    assert status["statusMessage"].startswith("step ") and status["statusMessage"].endswith("/100)")
    request(daemon, "tasks/cancel", {"taskId": report})

    held = start_task(daemon, "slow_compute", {"seconds": 600})
    assert inflight(daemon) == 1  # the task holds slow_compute's only slot
    ack = request(daemon, "tasks/cancel", {"taskId": held})["result"]
    assert ack["resultType"] == "complete" and not ack.keys() & {"taskId", "status", "result", "error"}
    assert task(daemon, held)["result"]["status"] == "cancelled"
    # The slot is free again (a generous bound on "at once"), and a call that needs it answers.
    wait_until_idle(daemon)
    witness = request(daemon, "tools/call", {"name": "slow_compute", "arguments": {"seconds": 0}}, declare=False)
    assert witness["result"]["content"][0]["text"] == "computed result in 0s"
    metrics = json.loads(daemon.get("/status", admin=True)[1])["tasks"]
    assert metrics["created"] == 2 and metrics["cancelled"] == 2 and metrics["running"] == 0


def inflight(daemon: RunningDaemon) -> int:
    status = json.loads(daemon.get("/status", admin=True)[1])
    return int(next(p["inflight"] for p in status["plugins"] if p["name"] == "conformance"))


def wait_until_idle(daemon: RunningDaemon, timeout: float = 10.0) -> None:
    """Wait until no call of the conformance plugin runs; fails after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while inflight(daemon):
        assert time.monotonic() < deadline, "a cancelled task still holds its slot"
        time.sleep(0.1)


def test_a_legacy_session_runs_every_call_on_its_request(mcphost_daemon: Callable[..., RunningDaemon]) -> None:
    daemon = mcphost_daemon(config())
    session = open_session(daemon.url, bearer(OWNER.token))
    call = rpc("tools/call", {"name": "failing_job", "arguments": {}})
    result = result_of(httpx.post(daemon.url, json=call, headers=session, timeout=30))["result"]
    assert result["isError"] is True and "taskId" not in result
    get = result_of(httpx.post(daemon.url, json=rpc("tasks/get", {"taskId": "x"}), headers=session))
    assert get["error"]["code"] == -32601


@pytest.fixture(scope="module")
def replicas(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Callable[[], RunningDaemon]]:
    """Redis, and a factory of replicas sharing it and the session secret."""
    workdir = tmp_path_factory.mktemp("task-replicas")
    secret = workdir / "session-secret"
    secret.write_text(secrets.token_hex(32))
    started: list[RunningDaemon] = []
    with redis_server() as redis:

        def replica() -> RunningDaemon:
            state = {"backend": "redis", "redis_url": redis.url, "timeout": 3.0}
            daemon = start_daemon(
                workdir, config(state=state, sessions={"secret_file": str(secret)}, tasks={"lease": 1})
            )
            started.append(daemon)
            return daemon

        try:
            yield replica
        finally:
            for daemon in started:
                daemon.stop()


def test_a_task_is_polled_answered_and_cancelled_through_another_replica(
    replicas: Callable[[], RunningDaemon],
) -> None:
    a, b = replicas(), replicas()
    asked = start_task(a, "confirm_delete", {"filename": "old.log"})
    questions = poll(b, asked, lambda r: r["result"]["status"] == "input_required")["result"]["inputRequests"]
    assert [q["method"] for q in questions.values()] == ["elicitation/create"]
    answer = {key: {"action": "accept", "content": {"confirm": True}} for key in questions}
    assert request(b, "tasks/update", {"taskId": asked, "inputResponses": answer})["result"]["resultType"] == "complete"
    result = poll(b, asked, ended)["result"]
    assert result["status"] == "completed"
    assert result["result"]["content"][0]["text"] == "old.log: action=accept"

    running = start_task(a, "slow_compute", {"seconds": 600})
    assert task(b, running)["result"]["status"] == "working"
    request(b, "tasks/cancel", {"taskId": running})
    assert task(a, running)["result"]["status"] == "cancelled"
    # The run on the first replica stops too, giving back its slot.
    wait_until_idle(a)
    assert a.stop() == 0, a.logs()[-3000:]  # giving up its lease as it stops


def test_a_task_on_a_lost_replica_is_reported_failed_by_another(
    replicas: Callable[[], RunningDaemon],
) -> None:
    a, b = replicas(), replicas()
    task_id = start_task(a, "slow_compute", {"seconds": 600})
    a.stop(signal.SIGKILL)
    result = poll(b, task_id, ended)["result"]
    assert result["status"] == "failed"
    assert "stopped before the task finished" in result["error"]["message"]


def test_a_search_over_a_large_tree_is_collected_as_a_task(
    mcphost_daemon: Callable[..., RunningDaemon], tmp_path: Path
) -> None:
    tree = tmp_path / "logs"
    for day in range(450):
        (tree / f"{day // 30:02}").mkdir(parents=True, exist_ok=True)
        (tree / f"{day // 30:02}" / f"{day % 30:02}.log").write_text(f"day {day}\nbackup failed: disk full\n")
    files = {"roots": [str(tree)], "max_matches": 1000}
    # Any call that may be a task becomes one at once, however quick the machine.
    daemon = mcphost_daemon(
        {"plugins": {"enable": ["files"], "files": {"settings": files}}, "auth": KEYS, "tasks": {"handoff_after": 0}}
    )
    task_id = start_task(daemon, "files_search", {"pattern": "disk full", "path": "."})
    result = poll(daemon, task_id, ended)["result"]
    assert result["status"] == "completed", result
    found = result["result"]["structuredContent"]
    assert found["files_searched"] == 450 and len(found["matches"]) == 450
