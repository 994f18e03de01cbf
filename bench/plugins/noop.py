"""The benchmark's plugin: the no-op ``add`` (served as ``noop_add``), the same written
``async def`` (``noop_add_async``) and, for the drain scenario, ``sleep`` (``noop_sleep``).

Loaded from its path (``[plugins] paths``) rather than installed, so the benchmark needs
no package install. ``add`` is a plain synchronous function, exactly like the reference
server's ``@mcp.tool() def add``: both the SDK and mcphost then run it in a worker
thread. ``add_async`` is the reference's ``async def add_async``: both run it on the event
loop. Measuring both keeps either kind from flattering one side.
"""

from __future__ import annotations

import trio

import mcphost


def add(a: int, b: int) -> int:
    """Add two integers."""
    return a + b


async def add_async(a: int, b: int) -> int:
    """Add two integers."""
    return a + b


# The drain scenario keeps 100 of these in flight at once; the plugin's default pool (16)
# would queue most of them instead.
@mcphost.tool(max_concurrency=100)
async def sleep(seconds: float) -> str:
    """Sleep, then say so: a call that stays in flight for a known time."""
    await trio.sleep(seconds)
    return f"slept {seconds}"


@mcphost.hookimpl
def mcphost_tools() -> list[object]:
    return [add, add_async, sleep]
