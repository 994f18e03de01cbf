"""Blocks inside ``async def``: sleeps and spins on the event loop itself."""

from __future__ import annotations

import time

import mcphost


async def sleep(seconds: float) -> str:
    """``time.sleep`` where ``trio.sleep`` was meant."""
    time.sleep(seconds)  # noqa: ASYNC251 - the point of this plugin
    return "slept"


async def spin() -> str:
    """Never yields, swallowing what it can."""
    while True:
        try:
            while True:
                pass
        except Exception:
            pass


@mcphost.hookimpl
def mcphost_tools():
    return [mcphost.tool(timeout=5)(sleep), spin]
