"""Several worker processes on one socket ([server] workers): a session moves freely
between them, ends on all of them at once, expires only when idle on all of them, and the
master forwards reloads and drains."""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import signal
import socket
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest

from mcphost.testing import ACCEPT_HEADERS, RunningDaemon, initialize_request, start_daemon
from tests.isolationkit import ends_within
from tests.sessionkit import open_session, rpc, update_reaches_stream, whoami


def _data(response: httpx.Response) -> dict:
    return _message(response.text)


def _message(text: str) -> dict:
    """The JSON-RPC answer in a response's body (the last event of an event stream)."""
    lines = [line[5:].strip() for line in text.splitlines() if line.startswith("data:")]
    return json.loads(lines[-1] if lines else text)


def test_a_session_is_served_by_whichever_worker_a_request_lands_on(tmp_path: Path) -> None:
    daemon = start_daemon(tmp_path, {"server": {"workers": 2}, "plugins": {"enable": ["echo"]}})
    try:
        # A new connection per request, so the kernel spreads them over both workers.
        with httpx.Client(limits=httpx.Limits(max_keepalive_connections=0)) as http:
            opened = http.post(daemon.url, json=initialize_request(), headers=ACCEPT_HEADERS)
            headers = {
                **ACCEPT_HEADERS,
                "mcp-session-id": opened.headers["mcp-session-id"],
                "mcp-protocol-version": "2025-11-25",
            }
            assert (
                http.post(
                    daemon.url, json={"jsonrpc": "2.0", "method": "notifications/initialized"}, headers=headers
                ).status_code
                == 202
            )

            # Concurrent requests, so one worker cannot take every connection while the
            # other sits idle in accept().
            def call(n: int) -> None:
                body = {
                    "jsonrpc": "2.0",
                    "id": n + 2,
                    "method": "tools/call",
                    "params": {"name": "echo_echo", "arguments": {"text": f"call {n}"}},
                }
                with httpx.Client(limits=httpx.Limits(max_keepalive_connections=0)) as own:
                    response = own.post(daemon.url, json=body, headers=headers)
                assert response.status_code == 200, response.text
                assert _data(response)["result"]["content"][0]["text"] == f"call {n}"

            with ThreadPoolExecutor(8) as pool:
                for batch in range(10):
                    list(pool.map(call, range(batch * 8, batch * 8 + 8)))
                    if any(r.get("event") == "session rebuilt" for r in daemon.log_records()):
                        break
        assert any(r.get("event") == "session rebuilt" for r in daemon.log_records()), "one worker served it all"
        pids = {r["pids"][0] for r in daemon.log_records() if r.get("event") == "workers started"}
        assert pids, "the master started its workers"
        daemon.process.send_signal(signal.SIGHUP)
        daemon.wait_for_log(lambda r: r.get("event") == "reloaded")
        assert daemon.stop(signal.SIGTERM) == 0
        stopped = [r for r in daemon.log_records() if r.get("event") == "stopped"]
        assert len(stopped) == 2, "both workers drained and stopped"
    finally:
        daemon.stop()


def test_a_burst_of_connections_is_spread_over_both_workers(tmp_path: Path) -> None:
    # Each worker listens on a socket of its own on the shared port, and the kernel hands each
    # connection to one of them as it arrives. On one shared socket, the first worker to wake
    # took every connection waiting (a daemon accepts all of them at once) and the other idled.
    daemon = start_daemon(tmp_path, {"server": {"workers": 2}, "plugins": {"enable": ["echo"]}})
    try:
        headers = open_session(daemon.url)
        workers = next(r["pids"] for r in daemon.log_records() if r.get("event") == "workers started")
        # Both workers paused while the burst connects: it waits in the kernel's queues.
        for pid in workers:
            os.kill(pid, signal.SIGSTOP)
        try:
            burst = [socket.create_connection(("127.0.0.1", daemon.port), timeout=30) for _ in range(24)]
        finally:
            for pid in workers:
                os.kill(pid, signal.SIGCONT)
        served_by = set()
        for sock in burst:
            connection = http.client.HTTPConnection("127.0.0.1", daemon.port, timeout=30)
            connection.sock = sock
            body = json.dumps(rpc("tools/call", {"name": "echo_whoami"}))
            connection.request("POST", urlsplit(daemon.url).path, body, {**headers, "content-type": "application/json"})
            answer = connection.getresponse()
            assert answer.status == 200
            served_by.add(_message(answer.read().decode())["result"]["structuredContent"]["pid"])
            connection.close()
        assert len(served_by) == 2, f"one worker took the whole burst: {served_by}"
    finally:
        daemon.stop()


def _pid(response: httpx.Response) -> str:
    assert response.status_code == 200, response.text
    return str(_data(response)["result"]["structuredContent"]["pid"])


def _held_by_both_workers(url: str, headers: dict[str, str]) -> set[str]:
    """Call the session on connections of their own until each worker has served it (each
    then holds a copy); the workers' pids. The kernel hands a new connection to whichever
    worker waits in accept() first, often the one that just served the last: only calls
    that overlap, many of them, reliably reach both."""
    pids: set[str] = set()
    with ThreadPoolExecutor(8) as pool:
        for _ in range(60):
            pids |= set(pool.map(lambda n: _pid(whoami(url, headers, n)), range(10, 18)))
            if len(pids) == 2:
                return pids
    raise AssertionError(f"one worker served every call: {pids}")


def test_a_worker_that_dies_is_replaced_and_the_log_names_both(tmp_path: Path) -> None:
    daemon = start_daemon(tmp_path, {"server": {"workers": 2}, "plugins": {"enable": ["echo"]}})
    try:
        workers = next(r["pids"] for r in daemon.log_records() if r.get("event") == "workers started")
        os.kill(workers[0], signal.SIGKILL)
        restarted = daemon.wait_for_log(lambda r: r.get("event") == "worker exited; started another", timeout=30)
        assert restarted["pid"] == workers[0]
        assert restarted["status"] == -signal.SIGKILL
        replacement = restarted["replacement"]
        assert replacement not in workers
        os.kill(replacement, 0)  # alive
        # It serves: the surviving worker and the replacement each answer on the shared port.
        headers = open_session(daemon.url)
        assert len(_held_by_both_workers(daemon.url, headers)) == 2
    finally:
        daemon.stop()


def test_a_delete_ends_the_session_on_every_worker_at_once(tmp_path: Path) -> None:
    daemon = start_daemon(tmp_path, {"server": {"workers": 2}, "plugins": {"enable": ["echo"]}})
    try:
        headers = open_session(daemon.url)
        _held_by_both_workers(daemon.url, headers)
        with contextlib.ExitStack() as streams:
            # One event stream on each worker: a worker answers a second one for the same
            # session 409, so two open streams are on two workers.
            open_streams = []
            for _ in range(40):
                client = streams.enter_context(httpx.Client(timeout=10))
                stream = streams.enter_context(
                    client.stream("GET", daemon.url, headers={**headers, "accept": "text/event-stream"})
                )
                if stream.status_code == 200:
                    open_streams.append(stream)
                if len(open_streams) == 2:
                    break
            assert len(open_streams) == 2

            assert httpx.delete(daemon.url, headers=headers).status_code == 200
            # At once, on new connections, whichever worker takes them.
            with ThreadPoolExecutor(4) as pool:
                statuses = list(pool.map(lambda n: whoami(daemon.url, headers, n).status_code, range(20)))
            assert statuses == [404] * 20
            for stream in open_streams:
                for _ in stream.iter_bytes():  # both streams end (a read timeout if one stays open)
                    pass
    finally:
        daemon.stop()


def test_a_session_idle_on_one_worker_lives_while_used_on_the_other(tmp_path: Path) -> None:
    """The worker that stops seeing a session drops its copy, never the session: the client
    is busy on the other worker, and the session outlives a restart."""
    config = {"server": {"workers": 2, "session_idle_timeout": 8}, "plugins": {"enable": ["echo"]}}
    daemon = start_daemon(tmp_path, config)
    state = tmp_path / f"state-{daemon.port}"
    try:
        headers = open_session(daemon.url)
        # Every request on one keep-alive connection: one worker serves them all.
        with httpx.Client() as kept:
            busy = _pid(kept.post(daemon.url, json=rpc("tools/call", {"name": "echo_whoami"}), headers=headers))
            assert len(_held_by_both_workers(daemon.url, headers)) == 2
            # Busy on one worker until the other's copy idles out (8 s after its last request).
            give_up = time.monotonic() + 30
            while not any(r.get("event") == "session idle timeout" for r in daemon.log_records()):
                assert time.monotonic() < give_up, "the idle worker kept its copy"
                answer = kept.post(daemon.url, json=rpc("tools/call", {"name": "echo_whoami"}), headers=headers)
                assert _pid(answer) == busy
                time.sleep(0.3)
        with ThreadPoolExecutor(4) as pool:
            statuses = list(pool.map(lambda n: whoami(daemon.url, headers, n).status_code, range(12)))
        assert statuses == [200] * 12
        assert daemon.stop() == 0
        # A daemon reads a record against its own idle timeout: a long one, so that the record
        # outlives a start that is slow on a loaded machine (10 s after the last touch at 8).
        restarted = {**config, "server": {"workers": 2, "session_idle_timeout": 120}}
        daemon = start_daemon(tmp_path, restarted, port=daemon.port, state_dir=state)
        assert whoami(daemon.url, headers).status_code == 200
    finally:
        daemon.stop()


@pytest.fixture(scope="module")
def two_workers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningDaemon]:
    """A daemon with two workers, and a plugin that announces resource updates on demand."""
    config = {"server": {"workers": 2}, "plugins": {"enable": ["echo", "features"]}}
    daemon = start_daemon(tmp_path_factory.mktemp("workers"), config)
    try:
        yield daemon
    finally:
        daemon.stop()


@contextlib.contextmanager
def _on_each_worker(url: str, headers: dict[str, str]) -> Iterator[list[list[httpx.Client]]]:
    """Two clients kept on each worker (each keeps the one connection the kernel handed to a
    worker), the workers in the order they were found."""
    found: dict[str, list[httpx.Client]] = {}
    with contextlib.ExitStack() as clients:
        for _ in range(100):
            client = clients.enter_context(httpx.Client(timeout=30))
            pid = _pid(client.post(url, json=rpc("tools/call", {"name": "echo_whoami"}), headers=headers))
            if len(found.setdefault(pid, [])) < 2:
                found[pid].append(client)
            if len(found) == 2 and all(len(pinned) == 2 for pinned in found.values()):
                yield list(found.values())
                return
        raise AssertionError(f"new connections did not reach both workers twice: {found}")


@pytest.mark.parametrize(
    ("stream_on", "announced_on"),
    [(0, 0), (0, 1), (1, 0), (1, 1)],
    ids=["stream-here-announced-here", "stream-here-announced-there", "stream-there-announced-here", "both-there"],
)
def test_a_subscription_hears_updates_whichever_worker_announces_them_and_holds_its_stream(
    two_workers: RunningDaemon, stream_on: int, announced_on: int
) -> None:
    """The session subscribes on one worker while the other holds a copy of it too; its event
    stream is held by one of them, and the update is announced by one of them."""
    url = two_workers.url
    headers = open_session(url)
    with _on_each_worker(url, headers) as workers:
        subscribe = rpc("resources/subscribe", {"uri": "echo://greeting"})
        subscribed = workers[0][0].post(url, json=subscribe, headers=headers)
        assert subscribed.status_code == 200 and "error" not in _data(subscribed), subscribed.text
        stream, announcer = workers[stream_on], workers[announced_on]
        update_reaches_stream((stream[0], url), (stream[1], url), (announcer[1], url), headers, "echo://greeting")


def test_a_signal_to_the_whole_process_group_drains_each_worker_once(tmp_path: Path) -> None:
    """Ctrl-C in a terminal sends SIGINT to every process of the group: only the master gets
    it (each worker has a group of its own), and passes it on to each worker once, which
    drains as on a signal of its own. Got twice, a worker took the second for an operator's
    "stop now" or died of it with a traceback."""
    daemon = start_daemon(tmp_path, {"server": {"workers": 2}, "plugins": {"enable": ["echo"]}}, new_session=True)
    try:
        _wait_until_both_serve(daemon)
        os.killpg(daemon.process.pid, signal.SIGINT)
        assert daemon.process.wait(30) == 0
    finally:
        daemon.stop()
    records = daemon.log_records()
    assert [r.get("signal") for r in records if r.get("event") == "shutting down"] == ["SIGINT", "SIGINT"]
    assert "Traceback" not in daemon.logs() and not [r for r in records if r.get("level") in ("warning", "error")]


def test_the_workers_drain_and_end_when_the_master_is_killed(tmp_path: Path) -> None:
    """A master killed outright (SIGKILL, the OOM killer) leaves no worker serving on the port."""
    daemon = start_daemon(tmp_path, {"server": {"workers": 2}, "plugins": {"enable": ["echo"]}})
    pids: list[int] = []
    try:
        pids = daemon.wait_for_log(lambda r: r.get("event") == "workers started")["pids"]
        _wait_until_both_serve(daemon)
        daemon.process.kill()
        daemon.process.wait()
        assert all(ends_within(pid, 30) for pid in pids), daemon.logs()[-4000:]
        assert [r.get("signal") for r in daemon.log_records() if r.get("event") == "shutting down"] == [
            "SIGTERM",
            "SIGTERM",
        ]
    finally:
        daemon.stop(signal.SIGKILL)  # the master, if a step above failed before killing it
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


def _wait_until_both_serve(daemon: RunningDaemon) -> None:
    """Until both workers serve (the master is ready, and the daemon answers, once one does)."""
    deadline = time.monotonic() + 30
    while sum(r.get("event") == "serving" for r in daemon.log_records()) < 2:
        assert time.monotonic() < deadline, daemon.logs()[-4000:]
        time.sleep(0.05)
