"""Per-worker cgroup limits, with the daemon in a cgroup delegated to it (systemd's
``Delegate=``): a memory hog is killed by the kernel at ``memory_max`` and its caller told
so, a fork bomb stops at ``max_tasks``, a child in a session of its own dies with the hosted
server that started it, and the workers' cgroups go when the workers do. One daemon serves
the whole module: on an emulated machine each start costs minutes.

These need a kernel with the unified cgroup hierarchy offering the memory and pids
controllers, and a cgroup delegated to the test run: ``tests/test_cgroups_vm.py`` boots a
virtual machine that has both and runs this module in it, in a cgroup made as systemd makes
a service's (``CGROUP_VARIABLE`` names it). Anywhere else the module skips.
"""

from __future__ import annotations

import os
import re
import signal
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import trio

from mcphost.testing import RunningDaemon, to_toml
from tests import isolationkit
from tests.isolationkit import CGROUP_VARIABLE, PLUGINS, alive, call, ends_within, witness_answers

BARE = Path(__file__).parent / "plugins" / "external" / "bare_server.py"
GREEDY = {"isolation": "process", "max_restarts": 100, "memory_max": "128M", "max_tasks": 48, "cpu_weight": 50}
CONFIG = {
    "plugins": {
        "enable": ["greedy", "witness", "bare"],
        "paths": [str(PLUGINS / "greedy.py"), str(PLUGINS / "witness.py")],
        "greedy": GREEDY,
        "witness": {"isolation": "process"},
        # A hosted server is a fresh process with no fork server above it to adopt and kill
        # an orphan: only its cgroup holds on to a child that left its session.
        "bare": {"command": [sys.executable, str(BARE)], "max_restarts": 100},
    }
}
STARTUP = 240.0
"""Seconds a daemon may take to answer (an emulated machine is slow to import it all)."""
WITNESS_BOUND = 2.0
"""Seconds within which the witness answers while its neighbour misbehaves (a freeze guard)."""
COMEBACK = 30.0
"""Seconds within which a worker that ended is serving again (a guard, not a speed test)."""

pytestmark = pytest.mark.skipif(
    CGROUP_VARIABLE not in os.environ,
    reason="needs a delegated cgroup on the unified hierarchy: run by tests/test_cgroups_vm.py in a virtual machine",
)


def delegated() -> Path:
    return Path(os.environ[CGROUP_VARIABLE])


def start(module_daemon, config: dict[str, Any]) -> RunningDaemon:
    daemon: RunningDaemon = module_daemon(config, wait=False)
    daemon.wait_until_healthy(STARTUP)
    return daemon


@pytest.fixture(scope="module")
def daemon(module_daemon) -> RunningDaemon:
    return start(module_daemon, CONFIG)


async def worker_pid(daemon: RunningDaemon, plugin: str) -> int:
    """The pid of ``plugin``'s worker, waiting while it restarts (emulated, longer)."""
    return await isolationkit.worker_pid(daemon, plugin, COMEBACK)


def cgroup_of(pid: int) -> Path:
    """The directory of ``pid``'s cgroup."""
    text = Path(f"/proc/{pid}/cgroup").read_text()
    relative = next(line[3:] for line in text.splitlines() if line.startswith("0::"))
    return Path("/sys/fs/cgroup") / relative.lstrip("/")


def workers_of(daemon: RunningDaemon, plugin: str) -> list[str]:
    """The cgroups of ``daemon``'s workers of ``plugin``, by name."""
    prefix = f"worker-{plugin}-{daemon.process.pid}-"
    return sorted(p.name for p in delegated().iterdir() if p.name.startswith(prefix))


def test_the_daemon_says_cgroup_limits_are_in_force(daemon: RunningDaemon) -> None:
    logged = daemon.wait_for_log(lambda r: r.get("event") == "worker limits")
    assert logged["limits"] == f"cgroup v2 at {delegated()} (cpu, memory, pids)"
    # The daemon left the delegated cgroup for a leaf, so that its children may have controllers.
    assert cgroup_of(daemon.process.pid) == delegated() / "daemon"
    assert {"memory", "pids", "cpu"} <= set((delegated() / "cgroup.subtree_control").read_text().split())


async def test_each_worker_has_a_cgroup_with_its_limits(daemon: RunningDaemon) -> None:
    pid = await worker_pid(daemon, "greedy")
    own = cgroup_of(pid)
    assert own.parent == delegated() and own.name in workers_of(daemon, "greedy")
    assert str((await call(daemon, "greedy_cgroup")).content[0].text).endswith(own.name)
    assert (own / "memory.max").read_text().strip() == str(128 * 2**20)
    assert (own / "memory.oom.group").read_text().strip() == "1"
    assert (own / "memory.swap.max").read_text().strip() == "0"
    assert (own / "pids.max").read_text().strip() == "48"
    assert (own / "cpu.weight").read_text().strip() == "50"
    # memory_max is the cgroup's, not an address-space limit that would fail allocations.
    limits = await trio.Path(f"/proc/{pid}/limits").read_text()
    assert re.search(r"Max address space\s+unlimited", limits), limits
    witness = await worker_pid(daemon, "witness")
    assert cgroup_of(witness).name.startswith(f"worker-witness-{daemon.process.pid}-")


async def test_a_memory_hog_is_killed_by_the_kernel_and_its_caller_told(daemon: RunningDaemon) -> None:
    before = await worker_pid(daemon, "greedy")
    result = await call(daemon, "greedy_hog", {"mib": 512})
    assert result.is_error
    text = result.content[0].text
    assert "plugin 'greedy'" in text and "was killed: over memory_max 128M" in text, text
    logged = daemon.wait_for_log(lambda r: r.get("event") == "plugin worker ended" and r.get("plugin") == "greedy")
    assert logged["how"] == "was killed: over memory_max 128M"
    assert await witness_answers(daemon) < WITNESS_BOUND
    status, body = daemon.get("/metrics", admin=True)
    assert status == 200 and 'mcphost_plugin_memory_kills_total{plugin="greedy"} 1.0' in body.decode()
    # It comes back, in a new cgroup, and serves what fits.
    assert await worker_pid(daemon, "greedy") != before
    small = await call(daemon, "greedy_hog", {"mib": 16})
    assert not small.is_error and small.content[0].text == str(16 * 2**20)


async def test_a_fork_bomb_stops_at_max_tasks(daemon: RunningDaemon) -> None:
    pid = await worker_pid(daemon, "greedy")
    own = cgroup_of(pid)
    result = await call(daemon, "greedy_fork_bomb", {"most": 200})  # bounded, for a machine without the limit
    assert not result.is_error
    bomb = result.structured_content
    assert 0 < bomb["forked"] < 48 and "Resource temporarily unavailable" in bomb["error"], bomb
    assert int((own / "pids.current").read_text()) <= 48
    assert await witness_answers(daemon) < WITNESS_BOUND
    children = [int(p) for p in (own / "cgroup.procs").read_text().split() if int(p) != pid]
    assert len(children) == bomb["forked"]
    # Ending the worker ends them all, and the cgroup goes with it.
    os.kill(pid, signal.SIGKILL)
    for child in children:
        assert await trio.to_thread.run_sync(ends_within, child, 10.0), "a child of the bomb outlived its worker"
    assert await worker_pid(daemon, "greedy") != pid
    assert not own.exists()


async def test_a_child_in_a_session_of_its_own_dies_with_its_server(daemon: RunningDaemon) -> None:
    pid = await worker_pid(daemon, "bare")
    child = int((await call(daemon, "bare_setsid_child")).content[0].text)
    assert alive(child) and os.getsid(child) == child != os.getsid(pid)
    own = cgroup_of(pid)
    in_its_cgroup = cgroup_of(child) == own and own.name.startswith("worker-bare-")
    os.kill(pid, signal.SIGKILL)
    assert await trio.to_thread.run_sync(ends_within, child, 10.0), "the server's child outlived it"
    assert in_its_cgroup, own
    assert await worker_pid(daemon, "bare") != pid


def test_cgroups_are_removed_on_reload_and_stop(daemon: RunningDaemon) -> None:
    # Last in the module: it stops the module's daemon. (A worker replaced has its cgroup
    # removed too: see the fork bomb's.)
    greedy = trio.run(worker_pid, daemon, "greedy")
    (old,) = workers_of(daemon, "greedy")
    assert cgroup_of(greedy).name == old
    # A reload that no longer enables greedy stops its worker, and removes its cgroup.
    daemon.config_path.write_text(to_toml({"plugins": {**CONFIG["plugins"], "enable": ["witness", "bare"]}}))
    reloaded = daemon.reload(timeout=STARTUP)
    assert reloaded["event"] == "reloaded", daemon.logs()[-6000:]
    assert ends_within(greedy, 10.0)
    deadline = time.monotonic() + 10.0
    while workers_of(daemon, "greedy") and time.monotonic() < deadline:
        time.sleep(0.05)
    assert workers_of(daemon, "greedy") == [] and len(workers_of(daemon, "witness")) == 1
    assert daemon.stop() == 0
    assert [p.name for p in delegated().iterdir() if p.name.startswith("worker-")] == []
