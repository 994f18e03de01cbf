"""Closes the daemon's standard error: at import when told to, and in a call (sync or async)."""

from __future__ import annotations

import os

import mcphost

if os.environ.get("HOSTILE_CLOSE_AT_IMPORT"):
    os.close(2)


def close_stderr() -> str:
    """Close fd 2 (and point fd 1 at /dev/null)."""
    os.close(2)
    null = os.open(os.devnull, os.O_WRONLY)
    os.dup2(null, 1)
    os.close(null)
    return "closed"


async def close_stderr_async() -> str:
    """The same, on the event loop."""
    return close_stderr()


def close_stderr_and_fail() -> str:
    """Close fd 2, then fail: the failure is logged while stderr is closed."""
    close_stderr()
    raise RuntimeError("failed after closing stderr")


async def close_stderr_and_fail_async() -> str:
    """The same, on the event loop."""
    return close_stderr_and_fail()


@mcphost.hookimpl
def mcphost_tools():
    return [close_stderr, close_stderr_async, close_stderr_and_fail, close_stderr_and_fail_async]
