"""A tool plugin as a sysadmin installs one: one tool, and a start-up that takes a few
seconds, as a plugin's does that connects to its backend first (it makes a reload take
long enough to tell whether ``systemctl reload`` waits for it)."""

from __future__ import annotations

import trio

import mcphost

STARTUP_SECONDS = 3.0


@mcphost.hookimpl
def mcphost_tools() -> list[object]:
    return [hello]


def hello(name: str) -> str:
    """Greet someone."""
    return f"hello, {name}"


@mcphost.hookimpl
async def mcphost_startup() -> None:
    await trio.sleep(STARTUP_SECONDS)
