"""Writes to stdout at import and in calls: in stdio mode, into the protocol stream."""

from __future__ import annotations

import os
import sys

import mcphost

print("printer: printed at import")
sys.stdout.flush()
os.write(1, b"printer: written to fd 1 at import\n")


def shout() -> str:
    """Print, then answer."""
    print("printer: printed in a sync call", flush=True)
    os.write(1, b"printer: written to fd 1 in a sync call\n")
    return "shouted"


async def shout_async() -> str:
    """Print on the event loop, then answer."""
    print("printer: printed in an async call", flush=True)
    return "shouted"


@mcphost.hookimpl
def mcphost_tools():
    return [shout, shout_async]
