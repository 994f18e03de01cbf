"""Closes the daemon's standard error: at import when told to, and in a call."""

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


@mcphost.hookimpl
def mcphost_tools():
    return [close_stderr]
