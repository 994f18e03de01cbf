"""The inline fence against hostile plugins: whatever one of them does, a witness plugin's
calls keep answering, and the hostile one's failures come out as clean, attributed errors.

Each hostile plugin is a path plugin in ``tests/hostile/``. The witness is ``echo``; its
calls run throughout each case, and each must answer within :data:`WITNESS_BOUND` (a
generous bound on "does not freeze", not a measure of speed).
"""

from __future__ import annotations

import contextlib
import functools
import json
import math
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import mcp_types as types
import pytest
import trio
from mcp import Client
from mcp.shared.exceptions import MCPError

from mcphost.testing import RunningDaemon, to_toml
from tests import isolationkit
from tests.conftest import ISOLATIONS, isolated

HOSTILE = Path(__file__).parent / "hostile"
WITNESS_BOUND = 2.0
"""Seconds within which every witness call must answer, whatever the hostile plugin does."""


def config(
    *plugins: str,
    isolation: str = "inline",
    limits: dict[str, Any] | None = None,
    env: dict[str, str] | None = None,
    **tables: Any,
) -> dict[str, Any]:
    """A config serving the witness and the hostile ``plugins`` (files in tests/hostile), each
    with ``isolation`` (and ``env``, which a worker is given through its table)."""
    served: dict[str, Any] = {"enable": ["echo", *plugins], "paths": [str(HOSTILE / f"{p}.py") for p in plugins]}
    served |= {p: {"env": env or {}} for p in plugins}
    return isolated({"plugins": served, "limits": limits or {}, **tables}, isolation)


class Witness:
    """Calls ``echo_echo`` over and over, keeping each call's latency."""

    def __init__(self, daemon: RunningDaemon):
        self.daemon = daemon
        self.latencies: list[float] = []
        self.failures: list[str] = []

    async def run(self) -> None:
        async with Client(self.daemon.url, mode="2026-07-28") as client:
            while True:
                start = time.monotonic()
                text = None
                with trio.move_on_after(30):
                    try:
                        text = (await client.call_tool("echo_echo", {"text": "witness"})).content[0].text
                    except Exception as error:  # the assertion below reports it
                        self.failures.append(repr(error))
                self.latencies.append(time.monotonic() - start if text == "witness" else math.inf)
                await trio.sleep(0.05)

    def check(self) -> None:
        """Every call answered, each within the bound, and there were some."""
        assert self.latencies, "the witness made no call"
        worst = max(self.latencies)
        assert worst < WITNESS_BOUND, f"a witness call took {worst:.2f}s (failures: {self.failures[:3]})"


@contextlib.asynccontextmanager
async def witnessed(daemon: RunningDaemon) -> AsyncIterator[Witness]:
    """The witness calls throughout the block; on leaving it, every call must have answered in time."""
    witness = Witness(daemon)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(witness.run)
        await trio.sleep(0.2)
        yield witness
        await trio.sleep(0.2)
        nursery.cancel_scope.cancel()
    witness.check()


def alive(daemon: RunningDaemon) -> None:
    code = daemon.process.poll()
    assert code is None, f"the daemon exited with {code}:\n{daemon.logs()[-3000:]}"


def plugin_report(daemon: RunningDaemon) -> dict[str, Any]:
    status, body = daemon.get("/ready", admin=True)
    return httpx.Response(status, content=body).json()["plugins"]


# BaseException, everywhere plugin code runs


KINDS = {"interrupt": "KeyboardInterrupt", "generator_exit": "GeneratorExit", "escape": "Escape", "exit": "SystemExit"}


@pytest.fixture(scope="module", params=ISOLATIONS)
def raiser(module_daemon, request: pytest.FixtureRequest) -> RunningDaemon:
    return module_daemon(config("raiser", isolation=request.param))


@pytest.mark.parametrize(
    "tool", ["raiser_sync_raise", "raiser_async_raise", "raiser_context_raise", "raiser_validated_raise"]
)
async def test_a_tool_raising_any_base_exception_is_an_attributed_error(raiser: RunningDaemon, tool: str) -> None:
    async with witnessed(raiser), Client(raiser.url) as client:
        for kind, name in KINDS.items():
            arguments = {"argument": {"kind": kind}} if tool == "raiser_validated_raise" else {"kind": kind}
            result = await client.call_tool(tool, arguments)
            text = result.content[0].text
            assert result.is_error and "internal error (error id" in text, (kind, result)
            error_id = text.rsplit("error id ", 1)[1].rstrip(")")
            logged = raiser.wait_for_log(lambda r, error_id=error_id: r.get("error_id") == error_id)
            assert logged["plugin"] == "raiser" and f"{name}: from the raiser plugin" in logged["exception"]
    alive(raiser)


async def test_resources_prompts_and_completions_raising_base_exceptions_are_errors(raiser: RunningDaemon) -> None:
    async with witnessed(raiser), Client(raiser.url) as client:
        for kind in KINDS:
            with pytest.raises(MCPError, match="internal error"):
                await client.read_resource(f"raiser://{kind}")
            with pytest.raises(MCPError, match="internal error"):
                await client.get_prompt("raiser_prompt_raise", {"kind": kind})
        with pytest.raises(MCPError, match="internal error"):
            await client.complete(types.ResourceTemplateReference(uri="raiser://{kind}"), {"name": "kind", "value": ""})
    alive(raiser)


async def test_a_readiness_hook_raising_keyboard_interrupt_cannot_stop_the_daemon(raiser: RunningDaemon) -> None:
    async with witnessed(raiser):
        for _ in range(3):
            status, _ = await trio.to_thread.run_sync(raiser.get, "/ready")
            assert status == 200  # the raiser is not required
    alive(raiser)
    report = plugin_report(raiser)["raiser"]
    assert report["ready"] is False and "KeyboardInterrupt" in report["error"]


# Imports and plain hooks run off the event loop, within their timeouts


SLOW = {"HOSTILE_SLOW_STARTUP": "1"}


@pytest.fixture(scope="module", params=ISOLATIONS)
def hung_loads(module_daemon, request: pytest.FixtureRequest) -> RunningDaemon:
    """Plugins whose import spins, whose import sleeps, and whose start-up hook sleeps."""
    hostile = ("spin_import", "sleep_import", "slow_hooks")
    return module_daemon(config(*hostile, isolation=request.param, limits={"load_timeout": 1}, env=SLOW), env=SLOW)


def test_plugins_that_do_not_finish_loading_fail_and_the_others_serve(hung_loads: RunningDaemon) -> None:
    plugins = plugin_report(hung_loads)
    assert plugins["echo"]["status"] == "loaded"
    for name, what in [("spin_import", "import"), ("sleep_import", "import"), ("slow_hooks", "mcphost_startup")]:
        assert plugins[name]["status"] == "failed", name
        assert plugins[name]["error"].startswith(f"{what} did not finish within 1s"), plugins[name]
    assert "(its thread may linger)" in plugins["spin_import"]["error"]


async def test_a_reload_retrying_hung_imports_does_not_freeze_the_others(hung_loads: RunningDaemon) -> None:
    async with witnessed(hung_loads):
        ended = await trio.to_thread.run_sync(hung_loads.reload)
    assert ended["event"].startswith("reloaded")
    plugins = plugin_report(hung_loads)
    assert plugins["spin_import"]["status"] == plugins["sleep_import"]["status"] == "failed"
    alive(hung_loads)


def test_mcphost_plugins_reports_a_hung_import_instead_of_hanging(tmp_path: Path) -> None:
    path = tmp_path / "mcphost.toml"
    path.write_text(to_toml(config("spin_import", limits={"load_timeout": 1})))
    done = subprocess.run(
        [sys.executable, "-m", "mcphost", "plugins", "--config", str(path)], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 1, done.stderr
    row = next(line for line in done.stdout.splitlines() if line.startswith("spin_import"))
    assert "failed" in row and "import did not finish within 1s (its thread may linger)" in row


@pytest.fixture(scope="module", params=ISOLATIONS)
def slow_ready(module_daemon, request: pytest.FixtureRequest) -> RunningDaemon:
    return module_daemon(config("slow_hooks", isolation=request.param))


async def test_a_plain_readiness_check_that_blocks_does_not_freeze_the_others(slow_ready: RunningDaemon) -> None:
    async with witnessed(slow_ready), trio.open_nursery() as nursery:
        for _ in range(2):
            nursery.start_soon(trio.to_thread.run_sync, slow_ready.get, "/ready")
    assert plugin_report(slow_ready)["slow_hooks"]["ready"] is True


# Leftovers at exit


def processes_in_group(group: int) -> list[int]:
    """Live (not zombie) processes in process group ``group``."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError):
            fields = stat.read_text().rsplit(")", 1)[1].split()
            if fields[0] != "Z" and int(fields[2]) == group:
                found.append(int(stat.parent.name))
    return found


@pytest.mark.parametrize("isolation", ISOLATIONS)
async def test_the_daemon_exits_in_time_and_ends_what_plugins_left_behind(mcphost_daemon, isolation: str) -> None:
    daemon = mcphost_daemon(config("leftovers", shutdown={"drain_timeout": 1}, isolation=isolation))
    async with witnessed(daemon), Client(daemon.url) as client:
        result = await client.call_tool("leftovers_spawn", {})
    left = json.loads(result.content[0].text)
    assert isolationkit.alive(left["same_group"]) and len(processes_in_group(left["group"])) >= 2
    started = time.monotonic()
    daemon.process.send_signal(signal.SIGTERM)
    # The drain deadline is 1 s; the rest is a generous margin for a loaded machine.
    status = await trio.to_thread.run_sync(functools.partial(daemon.process.wait, 20))
    assert status == 0 and time.monotonic() - started < 20
    assert not isolationkit.alive(left["same_group"])
    assert processes_in_group(left["group"]) == []
    logged = [r for r in daemon.log_records() if r.get("event") == "exiting past threads plugins left running"]
    if isolation == "inline":
        assert logged and logged[0]["threads"] == ["never-ends"]
    else:  # the thread ended with its worker: the daemon has none to exit past
        assert logged == []


# Global damage: signal handlers, stdout in stdio mode, closed standard streams


@pytest.mark.parametrize("isolation", ISOLATIONS)
async def test_signal_handlers_a_plugin_takes_on_the_loop_are_restored(mcphost_daemon, isolation: str) -> None:
    daemon = mcphost_daemon(config("signals", "signals_at_import", isolation=isolation))
    async with witnessed(daemon), Client(daemon.url) as client:
        assert (await client.call_tool("signals_ignore_signals", {})).content[0].text == "ignored"
    restored = [r for r in daemon.log_records() if r.get("event") == "plugin changed signal handlers; restored"]
    calls = {r["call"] for r in restored if r["plugin"] == "signals"}
    assert calls == {"mcphost_startup", "tool 'signals_ignore_signals'"}
    plugins = plugin_report(daemon)
    assert plugins["signals_at_import"]["status"] == "failed"
    assert "signal only works in main thread" in plugins["signals_at_import"]["error"]
    assert daemon.reload()["event"].startswith("reloaded"), "SIGHUP still reloads"
    status = await trio.to_thread.run_sync(functools.partial(daemon.stop, timeout=20))
    assert status == 0, "SIGTERM still stops the daemon"


def test_what_a_plugin_writes_to_stdout_never_reaches_the_stdio_protocol_stream(tmp_path: Path) -> None:
    path = tmp_path / "mcphost.toml"
    path.write_text(to_toml(config("printer")))
    process = subprocess.Popen(
        [sys.executable, "-m", "mcphost", "stdio", "--config", str(path)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env={**os.environ, "MCPHOST_LOG__FORMAT": "json"},
    )
    hello = {"protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "t", "version": "1"}}
    requests = [
        {"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": hello},
        {"jsonrpc": "2.0", "method": "notifications/initialized"},
        *(
            {"jsonrpc": "2.0", "id": n, "method": "tools/call", "params": {"name": name, "arguments": arguments}}
            for n, (name, arguments) in enumerate(
                [("printer_shout", {}), ("printer_shout_async", {}), ("echo_echo", {"text": "witness"})], start=2
            )
        ),
    ]
    assert process.stdin is not None and process.stdout is not None
    deadline = threading.Timer(60, process.kill)  # ends the reads below if nothing comes
    deadline.start()
    try:
        lines = []
        for request in requests:
            process.stdin.write(json.dumps(request).encode() + b"\n")
            process.stdin.flush()
            if "id" in request:  # one at a time: every line of stdout must be its answer
                lines.append(process.stdout.readline().decode())
        stdout, stderr = process.communicate(timeout=30)  # closes stdin: the daemon ends
    finally:
        deadline.cancel()
    assert stdout == b"" and [json.loads(line)["id"] for line in lines] == [1, 2, 3, 4], lines
    texts = [json.loads(line)["result"]["content"][0]["text"] for line in lines[1:]]
    assert texts == ["shouted", "shouted", "witness"]
    for noise in ("printed at import", "written to fd 1 at import", "printed in a sync call", "printed in an async"):
        assert f"printer: {noise}" in stderr.decode(), noise


def _restored(daemon: RunningDaemon) -> list[dict[str, Any]]:
    return [r for r in daemon.log_records() if r.get("event") == "plugin closed or replaced standard streams; restored"]


@pytest.mark.parametrize("when", ["import", "closer_close_stderr", "closer_close_stderr_async"])
@pytest.mark.parametrize("isolation", ISOLATIONS)
async def test_a_plugin_closing_stderr_is_caught_and_the_log_goes_on(mcphost_daemon, when: str, isolation: str) -> None:
    at_import = when == "import"
    env = {"HOSTILE_CLOSE_AT_IMPORT": "1"} if at_import else {}
    daemon = mcphost_daemon(config("closer", isolation=isolation, env=env), env=env)
    async with witnessed(daemon):
        if not at_import:
            async with Client(daemon.url) as client:
                assert (await client.call_tool(when, {})).content[0].text == "closed"
        status, _ = await trio.to_thread.run_sync(daemon.get, "/ready")
        assert status == 200
    if not (at_import and isolation == "process"):  # a worker failing its import says so below
        damaged = {"stderr"} if at_import else {"stdout", "stderr"}
        with trio.fail_after(10):  # the log line of each stream put back
            while True:
                if {stream for r in _restored(daemon) for stream in r["streams"]} == damaged:
                    break
                await trio.sleep(0.05)
        blamed = {("closer", "import" if at_import else f"tool {when!r}")}
        if isolation == "inline":
            # Inline, the streams are the process's: a witness call (sync, on a thread of its
            # own) that ends while they are damaged may be checked before the closer's call,
            # and blamed for what it found. In a worker, a plugin has its streams to itself.
            blamed.add(("echo", "tool 'echo_echo'"))
        assert {(r["plugin"], r["call"]) for r in _restored(daemon)} <= blamed, _restored(daemon)
    if at_import:
        closer = plugin_report(daemon)["closer"]
        assert closer["status"] == "failed" and closer["error"] == "import closed or replaced the daemon's stderr"
    # The log goes on after it: a request's line, written after the damage.
    daemon.wait_for_log(lambda r: r.get("event") == "request" and r.get("tool") == "echo_echo")
    alive(daemon)


# Oversized results are measured off the event loop and refused early


def peak_memory(daemon: RunningDaemon) -> int:
    """The daemon's peak resident memory so far, in bytes."""
    status = Path(f"/proc/{daemon.process.pid}/status").read_text()
    return int(next(line for line in status.splitlines() if line.startswith("VmHWM:")).split()[1]) << 10


@pytest.fixture(scope="module", params=ISOLATIONS)
def huge(module_daemon, request: pytest.FixtureRequest) -> RunningDaemon:
    return module_daemon(config("huge", isolation=request.param))


@pytest.mark.parametrize("tool", ["huge_many_dicts", "huge_many_dicts_async", "huge_many_models"])
async def test_a_flood_of_small_values_is_refused_without_stalling_the_others(huge: RunningDaemon, tool: str) -> None:
    async with witnessed(huge), Client(huge.url) as client:
        result = await client.call_tool(tool, {})
    assert (
        result.is_error and result.content[0].text == f"tool {tool!r} returned a result over its limit of 1048576 bytes"
    )
    alive(huge)


async def test_an_oversized_resource_is_refused(huge: RunningDaemon) -> None:
    async with witnessed(huge), Client(huge.url) as client:
        with pytest.raises(MCPError, match="resource 'huge://rows' is over its limit of 1048576 bytes"):
            await client.read_resource("huge://rows")


@pytest.mark.parametrize("isolation", ISOLATIONS)
async def test_a_huge_string_is_refused_without_copies(mcphost_daemon, isolation: str) -> None:
    daemon = mcphost_daemon(config("huge", isolation=isolation))
    size = 200 << 20
    before = peak_memory(daemon)
    async with witnessed(daemon), Client(daemon.url) as client:
        result = await client.call_tool("huge_big_string", {"megabytes": size >> 20})
    assert result.is_error and "over its limit of 1048576" in result.content[0].text
    # The plugin's own string is one copy; refusing it must not make several more.
    grown = peak_memory(daemon) - before
    assert grown < 2 * size, f"the peak grew by {grown >> 20} MiB for a {size >> 20} MiB result"


# The thread budget


def thread_count(daemon: RunningDaemon) -> int:
    status = Path(f"/proc/{daemon.process.pid}/status").read_text()
    return int(next(line for line in status.splitlines() if line.startswith("Threads:")).split()[1])


@pytest.mark.parametrize("isolation", ISOLATIONS)
async def test_an_author_asking_for_thousands_of_threads_gets_the_plugin_s_share(
    mcphost_daemon, isolation: str
) -> None:
    share = 4
    daemon = mcphost_daemon(
        config("threads", limits={"max_threads": 12, "max_threads_per_plugin": share}, isolation=isolation)
    )
    baseline, peak = thread_count(daemon), 0
    answers: list[str] = []

    async def sample() -> None:
        nonlocal peak
        while True:
            peak = max(peak, thread_count(daemon))
            await trio.sleep(0.02)

    async def block(tool: str) -> None:
        async with Client(daemon.url, mode="2026-07-28") as client:
            answers.append((await client.call_tool(tool, {"seconds": 1.5})).content[0].text)

    async with witnessed(daemon), trio.open_nursery() as nursery:
        nursery.start_soon(sample)
        async with trio.open_nursery() as calls:
            for n in range(4 * share):
                calls.start_soon(block, "threads_block_a" if n % 2 else "threads_block_b")
        nursery.cancel_scope.cancel()
    alive(daemon)
    # The plugin's share, the witness's thread and a few of the daemon's own, at most.
    assert peak - baseline <= share + 4, f"{peak - baseline} threads more than before the calls"
    limited = [a for a in answers if f"found no free thread within 3s: its plugin's {share}" in a]
    assert answers.count("done") >= share and limited, answers
    assert all(a == "done" or a in limited or "timed out after 3s" in a for a in answers), answers


# Blocking inside async def: the loop-stall watchdog


@pytest.mark.parametrize("isolation", ISOLATIONS)
async def test_a_call_blocking_the_event_loop_is_named_failed_and_its_plugin_degraded(
    mcphost_daemon, isolation: str
) -> None:
    daemon = mcphost_daemon(config("stall", limits={"stall_timeout": 0.5}, isolation=isolation))
    async with witnessed(daemon), Client(daemon.url) as client:
        slept = await client.call_tool("stall_sleep", {"seconds": 30})
        spun = await client.call_tool("stall_spin", {})
    for tool, result in (("stall_sleep", slept), ("stall_spin", spun)):
        expected = f"tool {tool!r} held the event loop for more than 0.5s and was stopped"
        assert result.is_error and result.content[0].text == expected
        noticed = daemon.wait_for_log(
            lambda r, tool=tool: r.get("event") == "plugin code is holding the event loop" and tool in r["call"]
        )
        assert noticed["plugin"] == "stall" and "hostile/stall.py" in noticed["stack"]
    assert "time.sleep(seconds)" in daemon.wait_for_log(lambda r: "stall_sleep" in r.get("call", ""))["stack"]
    assert "degraded" not in plugin_report(daemon)["echo"]
    if isolation == "process":  # stopped inside its worker, which serves on without a restart
        async with Client(daemon.url) as client:
            assert (await client.call_tool("stall_sleep", {"seconds": 0})).content[0].text == "slept"
        assert not [r for r in daemon.log_records() if r.get("event") == "ending plugin worker"]
    # The worker's watchdog tells the daemon, which counts and reports it as its own.
    assert plugin_report(daemon)["stall"]["degraded"].endswith("held the event loop for more than 0.5s")
    status, body = daemon.get("/metrics", admin=True)
    assert status == 200 and 'mcphost_loop_stalls_total{plugin="stall"} 2.0' in body.decode()
    env = {"MCPHOST_ADMIN__PORT": str(daemon.admin_port), "PATH": "/usr/bin:/bin"}
    command = [sys.executable, "-m", "mcphost", "status", "--config", str(daemon.config_path)]
    table = await trio.to_thread.run_sync(
        functools.partial(subprocess.run, command, capture_output=True, text=True, timeout=60, env=env)
    )
    row = next(line for line in table.stdout.splitlines() if line.startswith("stall"))
    assert "degraded: tool 'stall_" in row, table.stdout
    alive(daemon)


@pytest.mark.parametrize("isolation", ISOLATIONS)
async def test_an_async_start_up_hook_blocking_the_event_loop_fails_its_plugin(mcphost_daemon, isolation: str) -> None:
    daemon = mcphost_daemon(config("stall_startup", limits={"stall_timeout": 0.5}, isolation=isolation))
    async with witnessed(daemon):
        pass
    report = plugin_report(daemon)["stall_startup"]
    assert report["status"] == "failed"
    assert report["error"] == "mcphost_startup raised LoopStalled: held the event loop for more than 0.5s"
    if isolation == "inline":  # a worker that failed to start is gone, and its plugin with it
        assert report["degraded"] == "mcphost_startup held the event loop for more than 0.5s"


@pytest.mark.parametrize("tool", ["closer_close_stderr_and_fail", "closer_close_stderr_and_fail_async"])
@pytest.mark.parametrize("isolation", ISOLATIONS)
async def test_a_call_that_closes_stderr_and_then_fails_is_logged_and_an_error_to_its_caller_alone(
    mcphost_daemon, tool: str, isolation: str
) -> None:
    # The failure is logged while fd 2 is closed: the log's line must neither raise into the
    # call (inline: an internal error for the whole request; in a worker: the worker ended, or
    # a thread's call never answered) nor be lost.
    daemon = mcphost_daemon(config("closer", isolation=isolation))
    async with witnessed(daemon), Client(daemon.url) as client:
        result = await client.call_tool(tool, {})
        assert result.is_error and "failed with an internal error" in result.content[0].text, result
        assert (await client.call_tool("closer_close_stderr", {})).content[0].text == "closed"
    error_id = result.content[0].text.rsplit("error id ", 1)[1].rstrip(")")
    logged = daemon.wait_for_log(lambda r: r.get("event") == "plugin raised" and r.get("error_id") == error_id)
    assert "failed after closing stderr" in logged["exception"]
    daemon.wait_for_log(lambda r: r.get("event") == "request" and r.get("tool") == "echo_echo")
    alive(daemon)
