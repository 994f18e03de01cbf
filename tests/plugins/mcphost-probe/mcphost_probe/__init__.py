"""Probes that run inside mcphost, so with exactly the service's user, sandbox and limits:
what it may read, write and signal, a call that takes a while, a child process left behind,
and an event loop held up.

No probe returns what it read: a probe of a credential must not put the secret in a result
or a log line. Each answers ``"ok"`` or the name of the error the system gave (``EROFS``,
``EACCES``...).
"""

from __future__ import annotations

import errno
import mmap
import os
import subprocess
import time
from collections.abc import Callable
from typing import Any

import trio

import mcphost


@mcphost.hookimpl
def mcphost_tools() -> list[Callable[..., Any]]:
    return [whoami, slow, block, spawn, readable, writable, signal, wx_memory]


def _outcome(attempt: Callable[[], object]) -> str:
    try:
        attempt()
    except OSError as error:
        return errno.errorcode.get(error.errno or 0, str(error.errno))
    return "ok"


async def whoami(ctx: mcphost.ToolContext) -> dict[str, Any]:
    """The caller's session and the process that serves the call."""
    return {"session_id": ctx.session_id, "pid": os.getpid()}


async def slow(seconds: float) -> str:
    """Sleep without blocking anything else, then answer."""
    await trio.sleep(seconds)
    return f"slept {seconds}"


async def block(seconds: float) -> str:
    """Block the event loop, as an async tool that calls blocking code does."""
    time.sleep(seconds)  # noqa: ASYNC251 - what this probe is for
    return f"blocked {seconds}"


def spawn() -> int:
    """Start a child that outlives the call, in a session of its own; returns its pid."""
    child = subprocess.Popen(
        ["sleep", "3600"],
        start_new_session=True,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    return child.pid


def readable(path: str) -> str:
    """Whether a file (or directory listing) can be read."""

    def attempt() -> None:
        if os.path.isdir(path):
            os.listdir(path)
        else:
            with open(path, "rb") as file:
                file.read(1)

    return _outcome(attempt)


def writable(path: str) -> str:
    """Whether a new file can be made at ``path`` (removed again at once)."""

    def attempt() -> None:
        with open(path, "x"):
            pass
        os.unlink(path)

    return _outcome(attempt)


def signal(pid: int) -> str:
    """Whether the process may be signalled (signal 0: nothing is sent)."""
    return _outcome(lambda: os.kill(pid, 0))


def wx_memory() -> str:
    """Whether memory that is both writable and executable can be mapped."""
    return _outcome(lambda: mmap.mmap(-1, mmap.PAGESIZE, prot=mmap.PROT_READ | mmap.PROT_WRITE | mmap.PROT_EXEC))
