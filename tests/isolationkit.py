"""Isolated plugins in tests: the hostile and witness plugins' directory, calling a tool,
a worker's pid, and whether a process still runs."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import trio
from mcp import Client

from mcphost.plugins.worker.zygote import TITLE
from mcphost.testing import RunningDaemon

PLUGINS = Path(__file__).parent / "plugins" / "isolated"
SECRET_VARIABLE = "MCPHOST_TEST_ONLY_SECRET"
"""A variable of the daemon's environment that no worker may see."""
WITNESS_BOUND = 2.0
"""Seconds within which the witness answers while its neighbour misbehaves (a freeze guard)."""
COMEBACK = 20.0
"""Seconds within which a worker that ended is serving again (a guard, not a speed test)."""
CGROUP_VARIABLE = "MCPHOST_TEST_DELEGATED_CGROUP"
"""Names the delegated cgroup the test run is in (a directory under a cgroup2 mount), where
there is one (:mod:`tests.test_cgroups_vm` sets it in a virtual machine)."""


async def call(daemon: RunningDaemon, tool: str, arguments: dict[str, Any] | None = None, mode: str = "legacy") -> Any:
    """Call ``tool`` over a client of its own (``mode``: the protocol path)."""
    async with Client(daemon.url, mode=mode) as client:
        return await client.call_tool(tool, arguments or {})


async def worker_pid(daemon: RunningDaemon, plugin: str, within: float = COMEBACK) -> int:
    """The pid of ``plugin``'s worker, waiting (at most ``within`` seconds) while it restarts."""
    with trio.fail_after(within):
        while True:
            result = await call(daemon, f"{plugin}_pid")
            if not result.is_error:
                return int(result.content[0].text)
            await trio.sleep(0.1)


async def witness_answers(daemon: RunningDaemon) -> float:
    """How long the witness took to answer a ping (the call, not the client's connecting)."""
    async with Client(daemon.url) as client:
        start = time.monotonic()
        result = await client.call_tool("witness_ping", {})
        took = time.monotonic() - start
    assert not result.is_error and result.content[0].text == "pong"
    return took


def is_fork_server(pid: int) -> bool:
    """Whether ``pid`` is a fork server (or a worker forked from one), as its command line says."""
    return TITLE.encode() in Path(f"/proc/{pid}/cmdline").read_bytes()


def alive(pid: int) -> bool:
    """Whether ``pid`` runs (a zombie waiting to be reaped has ended)."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def ends_within(pid: int, seconds: float) -> bool:
    """Whether ``pid`` has ended, or ends within ``seconds`` (blocking: run in a thread from Trio)."""
    deadline = time.monotonic() + seconds
    while alive(pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    return not alive(pid)
