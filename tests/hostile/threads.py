"""Asks for thousands of threads: two blocking tools, each with its own huge pool."""

from __future__ import annotations

import time

import mcphost


@mcphost.tool(max_concurrency=5000, timeout=3)
def block_a(seconds: float) -> str:
    """Block a thread for ``seconds``."""
    time.sleep(seconds)
    return "done"


@mcphost.tool(max_concurrency=5000, timeout=3)
def block_b(seconds: float) -> str:
    """Block a thread for ``seconds``."""
    time.sleep(seconds)
    return "done"


@mcphost.hookimpl
def mcphost_tools():
    return [block_a, block_b]
