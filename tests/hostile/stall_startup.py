"""An async start-up hook that blocks the event loop."""

from __future__ import annotations

import time

import mcphost


@mcphost.hookimpl
async def mcphost_startup():
    time.sleep(60)  # noqa: ASYNC251 - the point of this plugin


@mcphost.hookimpl
def mcphost_tools():
    return []
