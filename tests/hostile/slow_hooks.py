"""Plain (sync) hooks that block: a start-up hook past its timeout (on the first start only)
and a readiness check that takes seconds each time."""

from __future__ import annotations

import os
import time

import mcphost


def marker() -> str:
    """A tool, so the plugin serves something."""
    return "slow_hooks"


@mcphost.hookimpl
def mcphost_tools():
    return [marker]


@mcphost.hookimpl
def mcphost_startup():
    if os.environ.get("HOSTILE_SLOW_STARTUP"):
        time.sleep(10)


@mcphost.hookimpl
def mcphost_ready():
    time.sleep(3)
    return True
