"""A plugin that takes what a cgroup limits: memory it really uses, processes by the dozen,
and a child in a session of its own; the tests run it in a worker with a delegated cgroup."""

from __future__ import annotations

import os
import time

import mcphost


@mcphost.hookimpl
def mcphost_tools() -> list[object]:
    return [pid, cgroup, hog, fork_bomb, setsid_child]


def pid() -> int:
    """The worker's process id."""
    return os.getpid()


def cgroup() -> str:
    """The worker's cgroup, as ``/proc/self/cgroup`` names it on the cgroup2 hierarchy."""
    with open("/proc/self/cgroup") as file:
        return next(line[3:].strip() for line in file if line.startswith("0::"))


def hog(mib: int) -> int:
    """Allocate ``mib`` MiB and write every byte, so that all of it is resident."""
    return len(b"\x01" * (mib * 2**20))


def fork_bomb(most: int = 10000) -> dict[str, object]:
    """Fork children that stay until killed, until fork fails (or ``most`` are running)."""
    forked = 0
    error = ""
    while forked < most:
        try:
            child = os.fork()
        except OSError as failed:
            error = str(failed)
            break
        if child == 0:
            time.sleep(600)
            os._exit(0)
        forked += 1
    return {"forked": forked, "error": error}


def setsid_child() -> int:
    """Start a long-lived child in a session (and process group) of its own; return its pid."""
    child = os.fork()
    if child == 0:
        os.setsid()
        os.execvp("sleep", ["sleep", "600"])
    return child
