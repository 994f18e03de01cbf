"""A well-behaved plugin in a worker of its own: it must keep answering whatever its
neighbours do."""

from __future__ import annotations

import os

import mcphost


@mcphost.hookimpl
def mcphost_tools() -> list[object]:
    def ping() -> str:
        """Answer at once."""
        return "pong"

    def pid() -> int:
        """The worker's process id."""
        return os.getpid()

    return [ping, pid]
