"""Takes the daemon's signals: SIGTERM and SIGHUP ignored, from a call on the event loop."""

from __future__ import annotations

import signal

import mcphost


async def ignore_signals() -> str:
    """Make the process ignore SIGTERM and SIGHUP (and SIGINT)."""
    for sig in (signal.SIGTERM, signal.SIGHUP, signal.SIGINT):
        signal.signal(sig, signal.SIG_IGN)
    return "ignored"


@mcphost.hookimpl
async def mcphost_startup():
    signal.signal(signal.SIGTERM, signal.SIG_IGN)


@mcphost.hookimpl
def mcphost_tools():
    return [ignore_signals]
