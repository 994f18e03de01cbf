"""``isolation = "process"``: a plugin in a worker process of its own. Whatever it does to
its process (exit, segfault, spin, break ``json``, get killed), the daemon serves on, a
witness plugin in another worker keeps answering, the caller gets a clean ``isError``
naming the plugin and how its worker ended, and the worker comes back."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import tracemalloc
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio
from mcp import Client
from mcp.shared.exceptions import MCPError
from mcp_types import ElicitResult, LoggingMessageNotificationParams, ResourceUpdatedNotification

from mcphost.core.plugin_tables import DefaultLimits, LimitsConfig, PluginConfig
from mcphost.plugins.worker.supervisor import message_bound
from mcphost.plugins.worker.wire import Channel, Framer, encode
from mcphost.testing import RunningDaemon, stateless_request, to_toml
from tests.conftest import ISOLATIONS, MODES, memory
from tests.isolationkit import (
    COMEBACK,
    PLUGINS,
    SECRET_VARIABLE,
    WITNESS_BOUND,
    alive,
    call,
    ends_within,
    witness_answers,
    worker_pid,
)
from tests.metricskit import key, scrape

CONFIG = {
    "plugins": {
        "enable": ["hostile", "witness", "faulty"],
        "paths": [str(PLUGINS / "hostile.py"), str(PLUGINS / "witness.py")],
        "hostile": {
            "isolation": "process",
            "max_restarts": 100,
            "env": {"HOSTILE_SETTING": "on"},
            "memory_max": "512M",
            "max_open_files": 256,
        },
        "witness": {"isolation": "process", "required": True},
        "faulty": {"isolation": "process"},
    }
}


@pytest.fixture(scope="module")
def daemon(module_daemon) -> RunningDaemon:
    return module_daemon(CONFIG, env={SECRET_VARIABLE: "hunter2"})


def one_plugin(mcphost_daemon: Any, tmp_path: Path, name: str, source: str, **table: Any) -> RunningDaemon:
    """A daemon serving the plugin ``name`` written as ``source``, its ``[plugins.<name>]`` table ``table``."""
    path = tmp_path / f"{name}.py"
    path.write_text(source)
    return mcphost_daemon({"plugins": {"enable": [name], "paths": [str(path)], name: table}})


def beside_witness(mcphost_daemon: Any, tmp_path: Path, name: str, source: str, **table: Any) -> RunningDaemon:
    """A daemon serving the plugin ``name`` written as ``source`` and the witness, each in a
    worker process, ``name``'s ``[plugins.<name>]`` table ``table`` besides."""
    path = tmp_path / f"{name}.py"
    path.write_text(source)
    plugins = {
        "enable": [name, "witness"],
        "paths": [str(path), str(PLUGINS / "witness.py")],
        name: {"isolation": "process", **table},
        "witness": {"isolation": "process"},
    }
    return mcphost_daemon({"plugins": plugins})


def _plugin_status(daemon: RunningDaemon, plugin: str) -> dict[str, Any]:
    """``plugin``'s entry in the daemon's ``/status``."""
    status, body = daemon.get("/status", admin=True)
    return next(p for p in httpx.Response(status, content=body).json()["plugins"] if p["name"] == plugin)


def _restarts(daemon: RunningDaemon, plugin: str) -> int:
    return int(_plugin_status(daemon, plugin)["restarts"])


async def calls_reach(daemon: RunningDaemon, plugin: str, *, inflight: int, queued: int) -> None:
    """Wait until ``plugin`` has ``inflight`` calls holding a slot and ``queued`` waiting for one:
    tests that need a call to wait behind another see it do so, however slowly a loaded
    machine lets each client connect."""
    with trio.fail_after(COMEBACK):
        while True:
            entry = await trio.to_thread.run_sync(_plugin_status, daemon, plugin)
            if (entry["inflight"], entry["queued"]) == (inflight, queued):
                return
            await trio.sleep(0.02)


async def test_each_isolated_plugin_runs_in_a_worker_of_its_own(daemon: RunningDaemon) -> None:
    hostile, witness = await worker_pid(daemon, "hostile"), await worker_pid(daemon, "witness")
    assert len({hostile, witness, daemon.process.pid}) == 3
    # Its own session and process group: killing the group ends nothing else.
    assert os.getpgid(hostile) == hostile and os.getsid(hostile) == hostile
    async with Client(daemon.url) as client:
        names = {t.name for t in (await client.list_tools()).tools}
    assert {"hostile_segfault", "witness_ping", "faulty_crash"} <= names


@pytest.mark.parametrize(
    ("tool", "arguments", "how"),
    [
        ("hostile_exit_now", {"status": 7}, "exited with status 7"),
        ("hostile_segfault", {}, "was killed by SIGSEGV"),
        ("hostile_spin", {}, "timed out after 3s and could not be cancelled"),
    ],
)
async def test_a_worker_that_dies_under_a_call(daemon: RunningDaemon, tool: str, arguments: dict, how: str) -> None:
    before = await worker_pid(daemon, "hostile")
    async with trio.open_nursery() as nursery:
        results: list[Any] = []

        async def crash() -> None:
            results.append(await call(daemon, tool, arguments))

        nursery.start_soon(crash)
        await trio.sleep(0.2)
        assert await witness_answers(daemon) < WITNESS_BOUND
    result = results[0]
    assert result.is_error and how in result.content[0].text
    assert "hostile" in result.content[0].text
    assert await witness_answers(daemon) < WITNESS_BOUND
    after = await worker_pid(daemon, "hostile")
    assert after != before, "a new worker serves the plugin"


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM])
async def test_a_worker_killed_from_outside(daemon: RunningDaemon, sig: signal.Signals) -> None:
    pid = await worker_pid(daemon, "hostile")
    results: list[Any] = []
    async with trio.open_nursery() as nursery:

        async def busy() -> None:
            results.append(await call(daemon, "hostile_sleep", {"seconds": 60}))

        nursery.start_soon(busy)
        await trio.sleep(0.5)
        killed = time.monotonic()
        os.kill(pid, sig)
    answered = time.monotonic() - killed
    result = results[0]
    assert result.is_error
    assert f"the worker of plugin 'hostile' was killed by {sig.name}" in result.content[0].text
    assert answered < 1.0, "a call in flight learns of its worker's end within a second"
    assert await witness_answers(daemon) < WITNESS_BOUND
    assert await worker_pid(daemon, "hostile") != pid


async def test_a_worker_that_stops_answering_pings_is_replaced(daemon: RunningDaemon) -> None:
    before = await worker_pid(daemon, "hostile")
    frozen = await call(daemon, "hostile_freeze")
    assert frozen.content[0].text == "frozen"
    ended = await trio.to_thread.run_sync(
        lambda: daemon.wait_for_log(lambda r: r.get("event") == "ending plugin worker" and r.get("pid") == before, 30)
    )
    assert "did not answer a ping" in ended["reason"]
    assert await witness_answers(daemon) < WITNESS_BOUND
    assert await worker_pid(daemon, "hostile") != before


async def test_a_plugin_that_breaks_json_in_its_process(daemon: RunningDaemon) -> None:
    before = await worker_pid(daemon, "hostile")
    result = await call(daemon, "hostile_break_json")
    assert result.is_error and "hostile" in result.content[0].text
    assert await witness_answers(daemon) < WITNESS_BOUND
    # The witness's json is its own: a call's arguments come through untouched.
    assert (await call(daemon, "faulty_refuse", {"reason": "intact"})).content[0].text.endswith("intact")
    assert await worker_pid(daemon, "hostile") != before


async def test_what_a_worker_started_ends_with_it(daemon: RunningDaemon) -> None:
    pid = await worker_pid(daemon, "hostile")
    child = int((await call(daemon, "hostile_spawn_child")).content[0].text)
    assert alive(child)
    os.kill(pid, signal.SIGKILL)
    assert await trio.to_thread.run_sync(ends_within, child, 5.0), "the worker's child was killed with it"


async def test_a_memory_hog_over_memory_max_gets_a_clean_error(daemon: RunningDaemon) -> None:
    pid = await worker_pid(daemon, "hostile")
    limits = await trio.Path(f"/proc/{pid}/limits").read_text()
    assert re.search(r"Max address space\s+536870912\s+536870912", limits), limits
    assert re.search(r"Max open files\s+256\s+256", limits), limits
    result = await call(daemon, "hostile_hog", {"mib": 1024})
    assert result.is_error and "internal error" in result.content[0].text
    logged = daemon.wait_for_log(lambda r: r.get("plugin") == "hostile" and "MemoryError" in r.get("exception", ""))
    assert logged["event"] == "plugin raised"
    assert await witness_answers(daemon) < WITNESS_BOUND
    small = await call(daemon, "hostile_hog", {"mib": 16})
    assert not small.is_error, "the worker serves on within its limit"


def test_the_daemon_says_which_worker_limits_are_in_force(daemon: RunningDaemon) -> None:
    # Here no cgroup is delegated to the daemon (tests/test_cgroup_limits.py runs where one is).
    logged = daemon.wait_for_log(lambda r: r.get("event") == "worker limits")
    assert logged["limits"].startswith("rlimits (memory_max as RLIMIT_AS): "), logged
    status, body = daemon.get("/status", admin=True)
    assert status == 200 and json.loads(body)["worker_limits"] == logged["limits"]


async def test_the_environment_is_scrubbed(daemon: RunningDaemon) -> None:
    result = await call(daemon, "hostile_environment")
    names = set(result.structured_content["result"])
    assert "PATH" in names and "HOSTILE_SETTING" in names
    assert not any(n.startswith("MCPHOST_") for n in names), names


async def test_worker_output_becomes_log_lines_tagged_with_the_plugin(daemon: RunningDaemon) -> None:
    await call(daemon, "hostile_chatter", {"text": "marker-42"})
    for stream in ("stdout", "stderr"):
        line = daemon.wait_for_log(lambda r, s=stream: r.get("line") == f"{s} says marker-42")
        assert line["plugin"] == "hostile" and line["event"] == "plugin output"


async def test_a_worker_flooding_its_output_is_logged_up_to_its_rate(mcphost_daemon) -> None:
    plugins = CONFIG["plugins"]
    hostile = plugins["hostile"] | {"output_rate": "40/second"}
    daemon = mcphost_daemon({"plugins": plugins | {"enable": ["hostile", "witness"], "hostile": hostile}})
    written: list[int] = []
    waits: list[float] = []

    async def flood() -> None:
        result = await call(daemon, "hostile_flood", {"seconds": 3})
        written.append(result.structured_content["result"])

    started = time.monotonic()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(flood)
        while not written:
            waits.append(await witness_answers(daemon))
    elapsed = time.monotonic() - started
    assert len(waits) > 1 and max(waits) < WITNESS_BOUND, waits
    # A line in the next period reports the count of the last one (a period is a second here).
    await trio.sleep(1.5)
    await call(daemon, "hostile_chatter", {"text": "after the flood"})
    daemon.wait_for_log(lambda r: r.get("line") == "stderr says after the flood")
    records = [r for r in daemon.log_records() if r.get("plugin") == "hostile"]
    logged = sum(r.get("line") == "flood" for r in records)
    reports = [r for r in records if r["event"] == "plugin output over its rate: lines dropped"]
    dropped = sum(r["lines"] for r in reports)
    # Every line is either logged or counted, and what is logged keeps to the rate.
    assert logged + dropped == written[0] and dropped > 0, (logged, dropped, written)
    assert 40 <= logged <= 40 * (elapsed + 2), (logged, elapsed)
    assert all(r["output_rate"] == "40/second" and r["level"] == "warning" for r in reports), reports
    assert scrape(daemon)[key("mcphost_plugin_output_dropped_lines_total", plugin="hostile")] == dropped


@pytest.mark.parametrize("mode", MODES)
async def test_the_fence_runs_inside_the_worker(daemon: RunningDaemon, mode: str) -> None:
    refused = await call(daemon, "faulty_refuse", {"reason": "disk is read-only"}, mode)
    assert refused.is_error and refused.content[0].text == "tool 'faulty_refuse' failed: disk is read-only"
    crashed = await call(daemon, "faulty_crash", {}, mode)
    text = crashed.content[0].text
    assert "internal error" in text and "hunter2" not in text
    error_id = text.rsplit("error id ", 1)[1].rstrip(")")
    logged = daemon.wait_for_log(lambda r: r.get("error_id") == error_id)
    assert logged["plugin"] == "faulty" and "hunter2" in logged["exception"]
    request = daemon.wait_for_log(lambda r: r.get("event") == "request" and r.get("request_id") == logged["request_id"])
    assert request["tool"] == "faulty_crash"
    hung = await call(daemon, "faulty_hang", {}, mode)
    assert hung.is_error and "timed out after 1s" in hung.content[0].text
    huge = await call(daemon, "faulty_huge", {}, mode)
    assert huge.is_error and "over its limit of 10000" in huge.content[0].text
    invalid = await call(daemon, "faulty_refuse", {"reason": 3}, mode)
    assert invalid.is_error and "Invalid arguments for tool 'faulty_refuse'" in invalid.content[0].text
    restarts = _restarts(daemon, "faulty")
    # The validator of the declared return type runs inside the fence too, in the worker.
    validated = await call(daemon, "faulty_exit_validating", {}, mode)
    assert validated.is_error and "internal error" in validated.content[0].text, validated
    await call(daemon, "faulty_refuse", {}, mode)  # a worker that had ended would be back by now
    assert _restarts(daemon, "faulty") == restarts


async def test_sync_calls_in_a_worker_time_out_and_queue_without_ending_it(daemon: RunningDaemon) -> None:
    restarts = _restarts(daemon, "faulty")
    blocked = await call(daemon, "faulty_block", {"seconds": 3})
    assert blocked.is_error and blocked.content[0].text == "tool 'faulty_block' timed out after 1s and was cancelled"
    answers: list[str] = []

    async def block_long() -> None:
        result = await call(daemon, "faulty_block_long", {"seconds": 0.5})
        answers.append(result.content[0].text)

    # One at a time (max_concurrency = 1): the second waits for the first's thread, then runs.
    started = time.monotonic()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(block_long)
        nursery.start_soon(block_long)
    assert answers == ["done", "done"] and time.monotonic() - started >= 1.0
    assert _restarts(daemon, "faulty") == restarts


SHARED_POOL = """
import mcphost


@mcphost.hookimpl
def mcphost_tools():
    def plain(n: int) -> int:
        \"\"\"A sync tool without a context: it runs on a thread of the worker's own.\"\"\"
        return n + 1

    async def fenced(n: int) -> int:
        \"\"\"An async tool: it runs in the fence, on the worker's event loop.\"\"\"
        return n + 2

    return [plain, fenced]
"""


async def test_a_call_in_the_fence_gets_the_slot_a_finished_thread_call_held(mcphost_daemon, tmp_path: Path) -> None:
    daemon = one_plugin(
        mcphost_daemon, tmp_path, "shared", SHARED_POOL, isolation="process", max_concurrency=1, timeout=20
    )
    async with Client(daemon.url) as client:
        for n in range(3):
            # The one slot of the plugin's pool is free again as soon as each call has answered.
            assert (await client.call_tool("shared_plain", {"n": n})).structured_content == {"result": n + 1}
            start = time.monotonic()
            answer = await client.call_tool("shared_fenced", {"n": n})
            assert time.monotonic() - start < WITNESS_BOUND and answer.structured_content == {"result": n + 2}


EXACT = """
import mcphost


@mcphost.hookimpl
def mcphost_tools():
    def successors(numbers: list[int]) -> list[int]:
        \"\"\"The integer after each of ``numbers``.\"\"\"
        return [n + 1 for n in numbers]

    def spelled(text: str) -> str:
        \"\"\"``text`` as the tool received it, spelled in ASCII.\"\"\"
        return ascii(text)

    return [successors, spelled]
"""
LONG_INTEGERS = [2**64, -(2**63) - 1, 123456789012345678901234567890, -(10**40)]
"""Integers JSON allows and a 64-bit parser does not hold: just past each end of its range, and far past."""


@pytest.mark.parametrize("isolation", ISOLATIONS)
async def test_a_tool_in_a_worker_gets_and_returns_exactly_what_an_inline_one_does(
    mcphost_daemon, tmp_path: Path, isolation: str
) -> None:
    daemon = one_plugin(mcphost_daemon, tmp_path, "exact", EXACT, isolation=isolation)
    for mode in MODES:
        result = await call(daemon, "exact_successors", {"numbers": LONG_INTEGERS}, mode)
        assert result.structured_content == {"result": [n + 1 for n in LONG_INTEGERS]}, (mode, result)
    # A lone surrogate, escaped, is valid JSON (the SDK's client cannot send one: raw HTTP does).
    body, headers = stateless_request("tools/call", {"name": "exact_spelled", "arguments": {"text": "a\ud800b"}})
    async with httpx.AsyncClient() as http:
        answer = await http.post(daemon.url, content=json.dumps(body), headers=headers)
    assert answer.json()["result"]["content"][0]["text"] == ascii("a\ud800b"), answer.text


THREADED = """
import threading
import time

import mcphost


@mcphost.hookimpl
def mcphost_tools():
    def which(seconds: float) -> int:
        \"\"\"Block for a while, then say which thread ran the call.\"\"\"
        time.sleep(seconds)
        return threading.get_ident()

    return [which]
"""


async def test_calls_one_at_a_time_run_on_one_thread_after_a_burst(mcphost_daemon, tmp_path: Path) -> None:
    source = tmp_path / "threaded.py"
    source.write_text(THREADED)
    plugin = {"isolation": "process", "max_concurrency": 8}
    daemon = mcphost_daemon({"plugins": {"enable": ["threaded"], "paths": [str(source)], "threaded": plugin}})
    async with Client(daemon.url) as client:
        burst: set[int] = set()

        async def one() -> None:
            burst.add((await client.call_tool("threaded_which", {"seconds": 0.5})).structured_content["result"])

        async with trio.open_nursery() as nursery:
            for _ in range(4):
                nursery.start_soon(one)
        assert len(burst) > 1  # the burst left the worker several idle threads
        # One call at a time goes to the thread that ran the last: what the plugin keeps per
        # thread, and the CPU's caches, stay warm.
        sequential = {
            (await client.call_tool("threaded_which", {"seconds": 0})).structured_content["result"] for _ in range(10)
        }
        assert len(sequential) == 1, sequential


async def test_a_call_that_waited_for_its_slot_runs_on_the_workers_own_threads(mcphost_daemon, tmp_path: Path) -> None:
    source = tmp_path / "threaded.py"
    source.write_text(THREADED)
    plugin = {"isolation": "process", "max_concurrency": 1, "timeout": 20}
    daemon = mcphost_daemon({"plugins": {"enable": ["threaded"], "paths": [str(source)], "threaded": plugin}})
    async with Client(daemon.url) as client:
        ran_on: list[int] = []

        async def one() -> None:
            ran_on.append((await client.call_tool("threaded_which", {"seconds": 0.5})).structured_content["result"])

        # The second call waits in the daemon for the first's slot, and reaches the worker with
        # the rest of its timeout: it still takes the thread the first one ran on, not a
        # round trip through the event loop to a thread of its own.
        async with trio.open_nursery() as nursery:
            nursery.start_soon(one)
            nursery.start_soon(one)
    assert len(ran_on) == 2 and len(set(ran_on)) == 1, ran_on


WAITING = """
import time

import mcphost


@mcphost.hookimpl
def mcphost_tools():
    def work(seconds: float) -> str:
        \"\"\"Block a thread for a while.\"\"\"
        time.sleep(seconds)
        return "done"

    return [work]
"""


@pytest.mark.parametrize("isolation", ISOLATIONS)
async def test_the_wait_for_a_slot_counts_against_the_calls_timeout(
    mcphost_daemon, tmp_path: Path, isolation: str
) -> None:
    daemon = one_plugin(mcphost_daemon, tmp_path, "waiting", WAITING, isolation=isolation, max_concurrency=1, timeout=2)
    answers: list[str] = []

    async def work() -> None:
        answers.append((await call(daemon, "waiting_work", {"seconds": 1.5})).content[0].text)

    # 3 s of work, one call at a time, within 2 s each: the call that waited for the slot has
    # less than 0.5 s of its timeout left, whichever of the two it is.
    async with trio.open_nursery() as nursery:
        nursery.start_soon(work)
        nursery.start_soon(work)
    assert sorted(answers) == ["done", "tool 'waiting_work' timed out after 2s and was cancelled"], answers


QUEUED = """
import trio

import mcphost

ENDED: list[float] = []


@mcphost.hookimpl
def mcphost_tools():
    async def hold(seconds: float) -> str:
        \"\"\"Hold the plugin's one slot for a while, noting a cancellation.\"\"\"
        try:
            await trio.sleep(seconds)
        except trio.Cancelled:
            ENDED.append(seconds)
            raise
        return f"held {seconds:g}"

    # A pool of its own: it answers while hold has the plugin's slot.
    @mcphost.tool(max_concurrency=1)
    async def ended() -> list[float]:
        \"\"\"The holds that were cancelled, by their seconds.\"\"\"
        return ENDED

    return [hold, ended]
"""


@pytest.mark.parametrize("isolation", ISOLATIONS)
async def test_calls_waiting_for_a_slot_that_their_clients_give_up_on(
    mcphost_daemon, tmp_path: Path, isolation: str
) -> None:
    daemon = one_plugin(mcphost_daemon, tmp_path, "queued", QUEUED, isolation=isolation, max_concurrency=1, timeout=8)

    async def give_up(seconds: float, after: float) -> None:
        async with Client(daemon.url) as client:
            with trio.move_on_after(after):
                await client.call_tool("queued_hold", {"seconds": seconds})

    held: list[str] = []

    async def first() -> None:
        held.append((await call(daemon, "queued_hold", {"seconds": 2})).content[0].text)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(first)
        await trio.sleep(0.3)
        # Both wait for the first call's slot; the client of the one ahead gives up while it
        # waits, so the slot goes to the other, whose client gives up once it runs.
        nursery.start_soon(give_up, 40, 0.7)
        await trio.sleep(0.3)
        nursery.start_soon(give_up, 50, 3.5)
    assert held == ["held 2"]
    ended: list[float] = []
    with trio.move_on_after(10):
        while not ended:
            ended = (await call(daemon, "queued_ended")).structured_content["result"]
            await trio.sleep(0.1)
    # Only the call that ran was cancelled where it ran; the one that never had the slot never ran.
    assert ended == [50]
    # The slot is free once more: a call gets it at once, well within its timeout.
    start = time.monotonic()
    assert (await call(daemon, "queued_hold", {"seconds": 0})).content[0].text == "held 0"
    assert time.monotonic() - start < WITNESS_BOUND
    assert (await call(daemon, "queued_ended")).structured_content["result"] == [50]


ENDING = """
import os

import trio

import mcphost


@mcphost.hookimpl
def mcphost_tools():
    async def end(status: int) -> str:
        \"\"\"End the worker a little later.\"\"\"
        await trio.sleep(0.5)
        os._exit(status)

    async def pid() -> int:
        \"\"\"The worker's process id.\"\"\"
        return os.getpid()

    return [end, pid]
"""


@pytest.mark.parametrize("max_restarts", [5, 0])
async def test_a_call_waiting_for_a_slot_when_its_worker_ends(
    mcphost_daemon, tmp_path: Path, max_restarts: int
) -> None:
    table = {"isolation": "process", "max_concurrency": 1, "timeout": 20, "max_restarts": max_restarts}
    daemon = one_plugin(mcphost_daemon, tmp_path, "ending", ENDING, **table)
    before = await worker_pid(daemon, "ending")
    answers: dict[str, Any] = {}

    async def one(tool: str, arguments: dict[str, Any]) -> None:
        answers[tool] = await call(daemon, tool, arguments)

    start = time.monotonic()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(one, "ending_end", {"status": 3})
        await trio.sleep(0.2)
        nursery.start_soon(one, "ending_pid", {})  # waits for the slot, which the worker ends under
    ended, waited = answers["ending_end"], answers["ending_pid"]
    assert ended.is_error and "exited with status 3" in ended.content[0].text, ended
    if max_restarts:  # it runs in the next worker
        assert not waited.is_error and waited.structured_content["result"] != before, waited
    else:  # it is told at once that the plugin settled as failed, not left to time out
        assert waited.is_error and "plugin 'ending' is not running" in waited.content[0].text, waited
        assert time.monotonic() - start < 10


FORGER = """
import mcphost
from mcphost.plugins.worker import main

FORGED = {
    "not_an_object": {"status": "ok", "result": [1, 2]},
    "not_a_result": {"status": "ok", "result": {"content": "not a list of blocks"}},
    "oversized": {"status": "ok", "result": {"content": [{"type": "text", "text": "x" * 100_000}]}},
    "not_an_answer": "a string",
    "a_code_not_a_number": {"status": "error", "code": "x", "message": "a forged failure"},
    "a_status_of_its_own": {"status": ["fine", "really"], "message": "a forged status"},
}
honest = main.reply_of


def forged(tool, outcome, result):
    # What a hostile plugin can do in its own process: answer the daemon with anything.
    name = tool.name.removeprefix("forger_")
    return FORGED[name] if name in FORGED else honest(tool, outcome, result)


main.reply_of = forged


@mcphost.hookimpl
def mcphost_tools():
    async def not_an_object() -> str:
        \"\"\"Answered with a list.\"\"\"
        return "honest"

    async def not_a_result() -> str:
        \"\"\"Answered with an object that is no tool result.\"\"\"
        return "honest"

    async def oversized() -> str:
        \"\"\"Answered with a result over the plugin's limit.\"\"\"
        return "honest"

    async def not_an_answer() -> str:
        \"\"\"Answered with a string where the daemon expects the call's outcome.\"\"\"
        return "honest"

    async def a_code_not_a_number() -> str:
        \"\"\"Answered with an error whose code is not a number.\"\"\"
        return "honest"

    async def a_status_of_its_own() -> str:
        \"\"\"Answered with a status no worker reports.\"\"\"
        return "honest"

    async def honest() -> str:
        \"\"\"Answered as written.\"\"\"
        return "honest"

    return [not_an_object, not_a_result, oversized, not_an_answer, a_code_not_a_number, a_status_of_its_own, honest]
"""


@pytest.mark.parametrize("mode", MODES)
async def test_a_worker_forging_its_answers_gets_its_callers_clean_errors(
    mcphost_daemon, tmp_path: Path, mode: str
) -> None:
    # A tool's result crosses from the worker as the JSON object the worker wrote: the daemon
    # checks its size, and the answer to the client checks its shape, as for every result.
    daemon = one_plugin(mcphost_daemon, tmp_path, "forger", FORGER, isolation="process", max_result_bytes=10_000)
    async with Client(daemon.url, mode=mode) as client:
        result = await client.call_tool("forger_not_an_object", {})
        assert result.is_error and "its worker sent a result that is not a JSON object" in result.content[0].text
        with pytest.raises(MCPError, match="invalid result"):
            await client.call_tool("forger_not_a_result", {})
        result = await client.call_tool("forger_oversized", {})
        assert result.is_error and "over its limit of 10000 bytes" in result.content[0].text, result
        result = await client.call_tool("forger_not_an_answer", {})
        assert result.is_error and "its worker sent an answer that is not a JSON object" in result.content[0].text
        result = await client.call_tool("forger_a_code_not_a_number", {})
        assert result.is_error and result.content[0].text == "a forged failure", result
        result = await client.call_tool("forger_a_status_of_its_own", {})
        assert result.is_error and result.content[0].text == "a forged status", result
        # The same client, session and worker serve on.
        assert (await client.call_tool("forger_honest", {})).structured_content == {"result": "honest"}
    # What the worker wrote as the call's status is not what the daemon logs and counts.
    logged = daemon.wait_for_log(
        lambda r: r.get("event") == "request" and r.get("tool") == "forger_a_status_of_its_own"
    )
    assert logged["tool_status"] == "error", logged
    counted = scrape(daemon)
    assert (
        counted[key("mcp_tool_calls_total", plugin="forger", tool_name="forger_a_status_of_its_own", status="error")]
        == 1
    )


CLOSING = """
import gc
import os
import socket
import threading
import time

import trio

import mcphost

ENDS_AFTER = {ends_after}


@mcphost.hookimpl
def mcphost_tools():
    async def close(gate: str) -> str:
        \"\"\"Once the file ``gate`` exists, close the worker's side of its connection to the
        daemon, and end the worker a while later.\"\"\"
        while not os.path.exists(gate):
            await trio.sleep(0.01)
        for sock in [o for o in gc.get_objects() if isinstance(o, socket.socket) and o.fileno() >= 0]:
            sock.shutdown(socket.SHUT_WR)
        if ENDS_AFTER is not None:
            threading.Thread(target=lambda: (time.sleep(ENDS_AFTER), os._exit(3)), daemon=True).start()
        return "closed"

    async def pid() -> int:
        \"\"\"The worker's process id.\"\"\"
        return os.getpid()

    return [close, pid]
"""


@pytest.mark.parametrize("ends_after", [3, None])
async def test_a_call_waiting_for_a_slot_when_its_worker_closed_the_connection_but_lives_on(
    mcphost_daemon, tmp_path: Path, ends_after: float | None
) -> None:
    # The slot is given back while the daemon still holds the worker's closed connection:
    # the waiting call is not sent there (nothing would ever answer), it waits for the next
    # worker; and a worker that never ends after closing its connection is ended, so that
    # there is a next one.
    table = {"isolation": "process", "max_concurrency": 1, "timeout": 15}
    source = CLOSING.replace("{ends_after}", repr(ends_after))
    daemon = one_plugin(mcphost_daemon, tmp_path, "closing", source, **table)
    before = await worker_pid(daemon, "closing")
    answers: dict[str, Any] = {}

    async def one(tool: str, arguments: dict[str, Any]) -> None:
        answers[tool] = await call(daemon, tool, arguments)

    gate = tmp_path / "close now"
    async with trio.open_nursery() as nursery:
        nursery.start_soon(one, "closing_close", {"gate": str(gate)})
        await calls_reach(daemon, "closing", inflight=1, queued=0)
        nursery.start_soon(one, "closing_pid", {})  # waits for the slot of the call that closes
        await calls_reach(daemon, "closing", inflight=1, queued=1)
        gate.touch()
    closed, waited = answers["closing_close"], answers["closing_pid"]
    assert closed.is_error and "stopped answering" in closed.content[0].text, closed
    assert not waited.is_error and waited.structured_content["result"] != before, waited


CANCELLABLE = """
import trio

import mcphost

ENDED: list[str] = []


@mcphost.hookimpl
def mcphost_tools():
    async def wait(seconds: float) -> str:
        \"\"\"Sleep, noting a cancellation.\"\"\"
        try:
            await trio.sleep(seconds)
        except trio.Cancelled:
            ENDED.append("cancelled")
            raise
        return "waited"

    async def ended() -> list[str]:
        \"\"\"How the waits that did not finish ended.\"\"\"
        return ENDED

    return [wait, ended]
"""


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("isolation", ISOLATIONS)
async def test_an_async_call_the_client_gives_up_on_is_cancelled_where_it_runs(
    mcphost_daemon, tmp_path: Path, isolation: str, mode: str
) -> None:
    daemon = one_plugin(mcphost_daemon, tmp_path, "cancellable", CANCELLABLE, isolation=isolation, timeout=60)
    async with Client(daemon.url, mode=mode) as client:
        with trio.move_on_after(1):
            await client.call_tool("cancellable_wait", {"seconds": 50})
    ended: list[str] = []
    with trio.move_on_after(10):  # the plugin's code is cancelled, not left to sleep out its 50 s
        while not ended:
            ended = (await call(daemon, "cancellable_ended")).structured_content["result"]
            await trio.sleep(0.1)
    assert ended == ["cancelled"]


@pytest.mark.parametrize("mode", MODES)
async def test_progress_and_logging_through_a_worker(daemon: RunningDaemon, mode: str) -> None:
    seen: list[tuple[float, float | None, str | None]] = []
    logged: list[Any] = []

    async def on_progress(progress: float, total: float | None, message: str | None) -> None:
        seen.append((progress, total, message))

    async def on_log(params: LoggingMessageNotificationParams) -> None:
        logged.append(params.data)

    options = {"log_level": "info"} if mode != "legacy" else {}
    async with Client(daemon.url, mode=mode, logging_callback=on_log, **options) as client:
        result = await client.call_tool("hostile_progress", {"steps": 3}, progress_callback=on_progress)
    assert result.content[0].text.startswith("hostile_progress by None in ")
    assert seen == [(1, 3, "step 1"), (2, 3, "step 2"), (3, 3, "step 3")]
    assert logged == [{"steps": 3}]


@pytest.mark.parametrize("mode", MODES)
async def test_elicitation_through_a_worker(daemon: RunningDaemon, mode: str) -> None:
    async def answer(context: Any, params: Any) -> ElicitResult:
        return ElicitResult(action="accept", content={"name": "Ada"})

    async with Client(daemon.url, mode=mode, elicitation_callback=answer) as client:
        result = await client.call_tool("hostile_ask", {})
    assert result.content[0].text == "accept: Ada"


def test_a_worker_that_keeps_ending_settles_as_failed(mcphost_daemon) -> None:
    config = {
        "plugins": {
            "enable": ["hostile", "witness"],
            "paths": [str(PLUGINS / "hostile.py"), str(PLUGINS / "witness.py")],
            "hostile": {"isolation": "process", "max_restarts": 1},
            "witness": {"isolation": "process"},
        }
    }
    daemon = mcphost_daemon(config)

    async def main() -> None:
        await call(daemon, "hostile_exit_now")
        await worker_pid(daemon, "hostile")  # back once
        await call(daemon, "hostile_exit_now")
        record = daemon.wait_for_log(lambda r: r.get("event") == "plugin failed: its worker keeps ending")
        assert "ended 2 times" in record["reason"]
        result = await call(daemon, "hostile_pid")
        assert result.is_error and "plugin 'hostile' is not running: its worker ended 2 times" in result.content[0].text
        assert await witness_answers(daemon) < WITNESS_BOUND

    trio.run(main)
    status, body = daemon.get("/ready", admin=True)
    hostile = httpx.Response(status, content=body).json()["plugins"]["hostile"]
    assert hostile["ready"] is False and "ended 2 times" in hostile["error"]
    status, body = daemon.get("/status", admin=True)
    plugins = {p["name"]: p for p in httpx.Response(status, content=body).json()["plugins"]}
    assert plugins["hostile"]["status"] == "failed" and plugins["hostile"]["restarts"] == 1
    assert plugins["witness"]["status"] == "loaded" and plugins["witness"]["isolation"] == "process"
    status, body = daemon.get("/metrics", admin=True)
    metrics = body.decode()
    assert 'mcphost_plugin_up{plugin="hostile",version="unknown"} 0.0' in metrics
    assert 'mcphost_plugin_restarts_total{plugin="hostile"} 1.0' in metrics


def test_mcphost_plugins_says_which_plugins_are_isolated(tmp_path: Path) -> None:
    config = tmp_path / "mcphost.toml"
    # echo is set inline (the default is process), so both values show.
    plugins = {**CONFIG["plugins"], "enable": ["hostile", "echo"], "echo": {"isolation": "inline"}}
    config.write_text(to_toml(CONFIG | {"plugins": plugins}))
    listing = subprocess.run(
        [sys.executable, "-m", "mcphost", "plugins", "--config", str(config)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    rows = {line.split()[0]: line.split() for line in listing.stdout.splitlines()[1:]}
    assert listing.stdout.split()[3] == "ISOLATION"
    assert rows["hostile"][3:5] == ["process", "loaded"] and "hostile_segfault" in listing.stdout
    assert rows["echo"][3:5] == ["inline", "loaded"]


VERSIONED = '''
import os
import time

import mcphost

time.sleep({import_seconds})  # a plugin slow to import


@mcphost.hookimpl
def mcphost_tools():
    def version() -> str:
        """Which version answers, from which process."""
        return f"{version} {{os.getpid()}}"

    def wait(seconds: float) -> str:
        """Take a while."""
        time.sleep(seconds)
        return f"waited in {{os.getpid()}}"

    return [version, wait]
'''


def test_reload_replaces_the_worker_and_lets_the_old_one_finish(mcphost_daemon, tmp_path: Path) -> None:
    source = tmp_path / "versioned.py"
    source.write_text(VERSIONED.format(version="v1", import_seconds=0))
    daemon = mcphost_daemon(
        {"plugins": {"enable": ["versioned"], "paths": [str(source)], "versioned": {"isolation": "process"}}}
    )

    async def main() -> None:
        first, old_pid = (await call(daemon, "versioned_version")).content[0].text.split()
        assert first == "v1"
        results: list[Any] = []
        async with trio.open_nursery() as nursery:

            async def slow() -> None:
                results.append(await call(daemon, "versioned_wait", {"seconds": 8}))

            nursery.start_soon(slow)
            await trio.sleep(0.5)
            source.write_text(VERSIONED.format(version="v2", import_seconds=3))
            later = source.stat().st_mtime + 2
            os.utime(source, (later, later))
            reloads: list[dict[str, Any]] = []
            reloaded = trio.Event()

            async def reload() -> None:
                reloads.append(await trio.to_thread.run_sync(daemon.reload))
                reloaded.set()

            nursery.start_soon(reload)
            await trio.sleep(1)
            # While the new version imports (3 s, in its own worker), the old one serves on
            # and the daemon's event loop is free.
            async with Client(daemon.url) as client:
                start = time.monotonic()
                during = await client.call_tool("versioned_version", {})
                assert time.monotonic() - start < WITNESS_BOUND
            assert during.content[0].text == f"v1 {old_pid}"
            await reloaded.wait()
            (ended,) = reloads
            assert ended["event"] == "reloaded" and "versioned" in ended["changed"]
            second, new_pid = (await call(daemon, "versioned_version")).content[0].text.split()
            assert second == "v2" and new_pid != old_pid, "a fresh worker serves the new version"
        assert not results[0].is_error and results[0].content[0].text == f"waited in {old_pid}"
        assert await trio.to_thread.run_sync(ends_within, int(old_pid), 10.0), "the old worker is stopped"

    trio.run(main)


def test_calls_waiting_for_a_slot_of_a_worker_a_reload_replaces_are_answered_by_it(
    mcphost_daemon, tmp_path: Path
) -> None:
    source = tmp_path / "versioned.py"
    source.write_text(VERSIONED.format(version="v1", import_seconds=0))
    table = {"isolation": "process", "max_concurrency": 1}
    daemon = mcphost_daemon({"plugins": {"enable": ["versioned"], "paths": [str(source)], "versioned": table}})

    async def main() -> None:
        old_pid = (await call(daemon, "versioned_version")).content[0].text.split()[1]
        results: list[Any] = []

        async def wait(seconds: float) -> None:
            results.append(await call(daemon, "versioned_wait", {"seconds": seconds}))

        async with trio.open_nursery() as nursery:
            nursery.start_soon(wait, 3)
            await calls_reach(daemon, "versioned", inflight=1, queued=0)
            nursery.start_soon(wait, 0.5)  # both wait for the first call's slot
            nursery.start_soon(wait, 0.5)
            await calls_reach(daemon, "versioned", inflight=1, queued=2)
            source.write_text(VERSIONED.format(version="v2", import_seconds=0))
            later = source.stat().st_mtime + 2
            os.utime(source, (later, later))
            reloaded = await trio.to_thread.run_sync(daemon.reload)
            assert reloaded["event"] == "reloaded" and "versioned" in reloaded["changed"]
        # The old worker is stopped only once the calls waiting for its slot have had their turn.
        assert [r.content[0].text for r in results] == [f"waited in {old_pid}"] * 3, results
        version, new_pid = (await call(daemon, "versioned_version")).content[0].text.split()
        assert version == "v2" and new_pid != old_pid

    trio.run(main)


def test_a_failed_reload_leaves_the_old_worker_serving(mcphost_daemon, tmp_path: Path) -> None:
    """A new version that does not load keeps the old worker serving, through later reloads
    too: its supervisor is not started a second time on the same worker."""
    source = tmp_path / "versioned.py"
    source.write_text(VERSIONED.format(version="v1", import_seconds=0))
    daemon = mcphost_daemon(
        {"plugins": {"enable": ["versioned"], "paths": [str(source)], "versioned": {"isolation": "process"}}}
    )

    async def main() -> None:
        _, pid = (await call(daemon, "versioned_version")).content[0].text.split()
        source.write_text("import mcphost\ndef broken(:\n")
        later = source.stat().st_mtime + 2
        os.utime(source, (later, later))
        for _ in range(2):
            ended = await trio.to_thread.run_sync(daemon.reload)
            assert "versioned" in ended["failed"]
            result = await call(daemon, "versioned_version")
            assert not result.is_error and result.content[0].text == f"v1 {pid}", result

    trio.run(main)


SLOW = """
import time

import mcphost


@mcphost.hookimpl
def mcphost_tools():
    def nap(seconds: float) -> str:
        \"\"\"Sleep ``seconds``, then say so.\"\"\"
        time.sleep(seconds)
        return "rested"

    return [nap]
"""


async def test_a_workers_config_is_the_daemons_whatever_its_environment_holds(mcphost_daemon, tmp_path: Path) -> None:
    # The daemon settled its config from its file and its own environment; the plugin's
    # environment is the plugin's, not a second source of the host's limits.
    env = {"MCPHOST_LIMITS__TIMEOUT": "0.5"}
    daemon = one_plugin(mcphost_daemon, tmp_path, "slow", SLOW, isolation="process", env=env)
    result = await call(daemon, "slow_nap", {"seconds": 1.5})
    assert not result.is_error and result.content[0].text == "rested", result.content


FLOODING = """
import gc
import select

import mcphost
from mcphost.plugins.worker.wire import Channel


@mcphost.hookimpl
def mcphost_tools():
    def flood(mib: int) -> str:
        \"\"\"Write ``mib`` MiB to the daemon without a newline, as one line that does not end;
        holding the channel's lock, so that no frame of the worker's own ends the line.\"\"\"
        (channel,) = [o for o in gc.get_objects() if isinstance(o, Channel)]
        block = memoryview(b"x" * (1 << 20))
        with channel._queuing:
            try:
                for _ in range(mib):
                    left = block
                    while left:
                        select.select([], [channel.sock], [])
                        left = left[channel.sock.send(left) :]
            except OSError:  # the daemon closed its end
                return "cut off"
        return "sent"

    def pid() -> int:
        \"\"\"The worker's process id.\"\"\"
        import os

        return os.getpid()

    return [flood, pid]
"""


BOUND = 64 * 2**20
"""The bound on one message from a worker with the default limits."""


def _reset_peak(pid: int) -> None:
    """Make ``pid``'s peak memory (``VmHWM``) start again from its memory now."""
    Path(f"/proc/{pid}/clear_refs").write_text("5")


async def test_a_worker_that_sends_a_line_without_end_cannot_take_the_daemonsmemory(
    mcphost_daemon, tmp_path: Path
) -> None:
    daemon = beside_witness(mcphost_daemon, tmp_path, "flooding", FLOODING)
    before = await worker_pid(daemon, "flooding")
    pid = daemon.process.pid
    _reset_peak(pid)
    resting = memory(pid, "VmRSS")
    flooded: list[Any] = []
    async with trio.open_nursery() as nursery:

        async def flood() -> None:
            # Six times the bound on one message: the daemon, holding it all, would grow by as much.
            flooded.append(await call(daemon, "flooding_flood", {"mib": 6 * BOUND // 2**20}))

        nursery.start_soon(flood)
        await trio.sleep(0.2)
        assert await witness_answers(daemon) < WITNESS_BOUND
    grew = memory(pid, "VmHWM") - resting
    assert grew < 2 * BOUND + 32 * 2**20, f"the daemon grew by {grew / 2**20:.0f} MiB"
    result = flooded[0]
    assert result.is_error and "the worker of plugin 'flooding' was killed" in result.content[0].text, result

    def ending(record: dict[str, Any]) -> bool:
        return record.get("event") == "ending plugin worker" and record.get("plugin") == "flooding"

    ended = await trio.to_thread.run_sync(daemon.wait_for_log, ending)
    assert f"a message longer than {BOUND} bytes" in ended["reason"], ended
    assert await witness_answers(daemon) < WITNESS_BOUND
    assert await worker_pid(daemon, "flooding") != before


async def test_a_worker_asking_without_end_is_read_no_faster_than_the_daemon_answers(mcphost_daemon) -> None:
    plugins = CONFIG["plugins"]
    hostile = {"isolation": "process", "timeout": 120}
    daemon = mcphost_daemon({"plugins": plugins | {"enable": ["hostile", "witness"], "hostile": hostile}})
    restarts = _restarts(daemon, "hostile")
    pid = daemon.process.pid
    _reset_peak(pid)
    resting = memory(pid, "VmRSS")
    count, logged, results, waits = 20_000, 0, [], []

    async def on_log(params: LoggingMessageNotificationParams) -> None:
        nonlocal logged
        logged += 1

    async def burst() -> None:
        # 20,000 log messages of 2 KB asked at once: each handled in a task at once, they took 211 MiB.
        async with Client(daemon.url, mode="legacy", logging_callback=on_log) as client:
            results.append(await client.call_tool("hostile_log_burst", {"count": count, "size": 2000}))

    async with trio.open_nursery() as nursery:
        nursery.start_soon(burst)
        while not results:
            waits.append(await witness_answers(daemon))
    grew = memory(pid, "VmHWM") - resting
    assert grew < 64 * 2**20, f"the daemon grew by {grew / 2**20:.0f} MiB"
    assert not results[0].is_error and logged == count, (results, logged)
    assert max(waits) < WITNESS_BOUND, waits
    # A worker whose answers wait behind what the daemon has not read yet is not taken for one
    # that stopped answering pings.
    assert _restarts(daemon, "hostile") == restarts


BIG_LOGS = """
import select

import orjson

import mcphost


@mcphost.hookimpl
def mcphost_tools():
    def big_logs(ctx: mcphost.ToolContext, count: int, mib: int) -> str:
        \"\"\"Send ``count`` log messages of ``mib`` MiB for this call, written to the wire
        as fast as the daemon reads them, none waiting for the daemon's answer (from the
        call's thread, so the worker answers its pings meanwhile).\"\"\"
        channel, data = ctx._channel, "x" * (mib << 20)
        with channel._queuing:
            for n in range(count):
                frame = {"jsonrpc": "2.0", "id": 10**9 + n, "method": "mcphost/log",
                         "params": {"call": ctx._call, "level": "info", "data": data, "logger": None}}
                left = memoryview(orjson.dumps(frame) + b"\\n")
                while left:
                    select.select([], [channel.sock], [])
                    left = left[channel.sock.send(left) :]
        return "sent"

    return [big_logs]
"""


async def test_big_messages_for_a_client_that_reads_slowly_wait_in_the_worker_not_the_daemon(
    mcphost_daemon, tmp_path: Path
) -> None:
    daemon = beside_witness(mcphost_daemon, tmp_path, "biglogs", BIG_LOGS, timeout=120)
    pid = daemon.process.pid
    _reset_peak(pid)
    resting = memory(pid, "VmRSS")
    count, mib = 30, 8
    body, headers = stateless_request(
        "tools/call", {"name": "biglogs_big_logs", "arguments": {"count": count, "mib": mib}}
    )
    body["params"]["_meta"]["io.modelcontextprotocol/logLevel"] = "info"
    logged, answers = 0, []
    async with (
        httpx.AsyncClient(timeout=120) as client,
        client.stream("POST", daemon.url, json=body, headers=headers) as response,
    ):
        assert response.status_code == 200
        # The client reads nothing for a while: every handler sending it a log message waits.
        # They held each message they had read (30 of 8 MiB: the daemon grew by some 600 MiB).
        waits = [await witness_answers(daemon) for _ in range(10)]
        await trio.sleep(3)
        async for line in response.aiter_lines():
            if line.startswith("data:") and (message := json.loads(line[5:]))["jsonrpc"]:
                if message.get("method") == "notifications/message":
                    logged += len(message["params"]["data"]) == mib << 20
                elif "result" in message or "error" in message:
                    answers.append(message)
    grew = memory(pid, "VmHWM") - resting
    # The plugin waits for none of the daemon's answers: what it sent last may be handled after
    # its result, and is then not sent (nothing of a call is sent after its result).
    assert 0 < logged <= count and answers[0]["result"]["content"][0]["text"] == "sent", (logged, answers)
    assert max(waits) < WITNESS_BOUND, waits
    # What is handled at once holds no more than one message may (64 MiB), and its copies.
    assert grew < 4 * BOUND, f"the daemon grew by {grew / 2**20:.0f} MiB"


ANNOUNCER = """
import mcphost


@mcphost.hookimpl
def mcphost_resources():
    @mcphost.resource("burst://doc", mime_type="text/plain")
    def doc() -> str:
        \"\"\"A document said to change without end.\"\"\"
        return "doc"

    return [doc]


@mcphost.hookimpl
def mcphost_tools():
    async def burst(count: int) -> int:
        \"\"\"Announce ``count`` changes of burst://doc, one after the other.\"\"\"
        for _ in range(count):
            await mcphost.notify_resource_updated("burst://doc")
        return count

    return [burst]
"""


@pytest.mark.filterwarnings("ignore::mcp.shared.exceptions.MCPDeprecationWarning")  # resources/subscribe
async def test_changes_announced_without_end_reach_subscribers_once_per_delivery_not_each(
    mcphost_daemon, tmp_path: Path
) -> None:
    daemon = beside_witness(mcphost_daemon, tmp_path, "announcer", ANNOUNCER, timeout=120)
    count, heard, results = 20_000, [0, 0, 0], []
    told: list[int] = []
    told_again = trio.Event()

    def counter(index: int) -> Any:
        async def handle(message: Any) -> None:
            if isinstance(message, ResourceUpdatedNotification) and str(message.params.uri) == "burst://doc":
                heard[index] += 1
                if told and all(now > then for now, then in zip(heard, told, strict=True)):
                    told_again.set()

        return handle

    async with contextlib.AsyncExitStack() as stack:
        clients = [
            await stack.enter_async_context(Client(daemon.url, mode="legacy", message_handler=counter(i)))
            for i in range(3)
        ]
        for client in clients:
            await client.subscribe_resource("burst://doc")

        async def burst() -> None:
            results.append(await clients[0].call_tool("announcer_burst", {"count": count}))

        async with trio.open_nursery() as nursery:
            nursery.start_soon(burst)
            waits = []
            while not results:
                waits.append(await witness_answers(daemon))
        assert not results[0].is_error
        # A change announced after the burst still reaches every subscriber.
        told.extend(heard)
        await call(daemon, "announcer_burst", {"count": 1})
        with trio.fail_after(10):
            await told_again.wait()
    # Told once per delivery, for however many changes came during it: each subscriber was
    # told of every one of the 20,000 (3 clients, 60,000 notifications) when each had its own.
    assert all(2 <= n < count // 10 for n in heard), heard
    assert max(waits) < WITNESS_BOUND, waits


def test_the_bound_on_a_message_grows_with_the_largest_result_the_config_allows() -> None:
    assert message_bound(DefaultLimits(), PluginConfig()) == BOUND
    assert message_bound(DefaultLimits(max_result_bytes=16 * 2**20), PluginConfig()) == 128 * 2**20
    big_tool = PluginConfig(max_result_bytes=1000, tools={"t": LimitsConfig(max_result_bytes=20 * 2**20)})
    assert message_bound(DefaultLimits(), big_tool) == 160 * 2**20


def test_the_framer_splits_messages_across_any_chunks_and_bounds_a_line() -> None:
    messages = [{"id": 1, "text": "a" * 40}, {"id": 2, "n": [1, 2, 3]}, {"id": 3}]
    data = b"".join(encode(m) for m in messages) + b"\n"  # an empty line is skipped
    for size in (1, 2, 7, 50, len(data)):
        framer = Framer(len(encode(messages[0])) - 1)  # a line's newline does not count
        got = [m for start in range(0, len(data), size) for m in framer.feed(data[start : start + size])]
        assert got == messages, size
    # One byte over the bound is refused, in one chunk or many, before more of it is kept.
    with pytest.raises(ValueError, match="longer than 10 bytes"):
        Framer(10).feed(b'{"a":"12345"}\n')
    framer = Framer(100)
    for _ in range(10):
        assert framer.feed(b"x" * 10) == []
    with pytest.raises(ValueError, match="longer than 100 bytes"):
        framer.feed(b"x")
    # A long line in small chunks costs its length, not the square of it (that would take minutes).
    framer, line = Framer(), encode({"text": "x" * (16 * 2**20)})
    start = time.monotonic()
    got = [m for at in range(0, len(line), 1024) for m in framer.feed(line[at : at + 1024])]
    assert time.monotonic() - start < 5 and got == [{"text": "x" * (16 * 2**20)}]


async def test_a_backlog_of_frames_is_sent_without_copying_it_however_slowly_the_other_end_reads() -> None:
    # 10 MB queued at once (many big results, or calls with big arguments), read 64 KB at a
    # time: the channel joined the whole backlog, and copied what was left of it, each time
    # the socket took some, megabytes copied for each few hundred KB sent, on the event loop
    # of the worker or the daemon (48 results of 1 MB at once took 6-9 s instead of 0.5 s).
    ours, theirs = socket.socketpair()
    channel = Channel(ours)
    frames = [
        {"jsonrpc": "2.0", "method": "notifications/message", "params": {"data": f"{n:x}" * 25_000}} for n in range(200)
    ]
    expected = hashlib.sha256(b"".join(encode(f) for f in frames))
    size, got, received = sum(len(encode(f)) for f in frames), hashlib.sha256(), 0
    chunk = memoryview(bytearray(1 << 16))
    theirs.setblocking(False)
    tracemalloc.start()
    try:
        async with trio.open_nursery() as nursery:
            await nursery.start(channel.run)
            for frame in frames:
                channel.send(frame)
            while received < size:
                await trio.lowlevel.wait_readable(theirs)
                try:
                    count = theirs.recv_into(chunk)
                except BlockingIOError:
                    continue
                got.update(chunk[:count])
                received += count
            nursery.cancel_scope.cancel()
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
        theirs.close()
    assert got.digest() == expected.digest()
    # The frames themselves, and no copy of them (each copy of the backlog is as big again).
    assert peak < size * 1.25, f"{peak / 2**20:.1f} MiB allocated to send {size / 2**20:.1f} MiB"


def test_the_framer_hands_stray_lines_on_where_told_to_and_refuses_them_elsewhere() -> None:
    data = b'Server running on stdio\n{"id": 1}\n42\n{"id": 2'
    strays: list[bytes] = []
    framer = Framer(100, strays.append)
    assert framer.feed(data) == [{"id": 1}] and framer.feed(b"}\n") == [{"id": 2}]
    assert strays == [b"Server running on stdio", b"42"]
    with pytest.raises(ValueError, match="longer than 10 bytes"):  # the bound holds all the same
        Framer(10, strays.append).feed(b"x" * 11 + b"\n")
    for stray in (b"Server running on stdio\n", b"42\n"):
        with pytest.raises(ValueError):
            Framer().feed(stray)


@pytest.mark.parametrize("fork_server", [True, False])
async def test_a_worker_that_dies_while_its_plugin_loads_says_how(
    mcphost_daemon: Any, tmp_path: Path, fork_server: bool
) -> None:
    source = "import os\n\nos._exit(4)\n"
    path = tmp_path / "dies.py"
    path.write_text(source)
    daemon = mcphost_daemon({"plugins": {"enable": ["dies"], "paths": [str(path)], "fork_server": fork_server}})
    failed = await trio.to_thread.run_sync(
        daemon.wait_for_log, lambda r: r.get("event") == "plugin failed to load" and r.get("plugin") == "dies"
    )
    assert failed["error"].startswith("its worker exited with status 4 while starting"), failed
