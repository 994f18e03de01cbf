"""A plugin whose tools misbehave in every way the fence must contain."""

from __future__ import annotations

import time
from typing import Annotated

import trio
from pydantic import AfterValidator

import mcphost


@mcphost.hookimpl
def mcphost_tools() -> list[object]:
    return [crash, refuse, hang, block, block_long, huge, bad_return, exit_validating, exit_process]


def crash() -> str:
    """Raise an unexpected exception carrying a secret in its text."""
    raise RuntimeError("database password is hunter2")


def refuse(reason: str = "not today") -> str:
    """Fail on purpose with a message for the client."""
    raise mcphost.ToolError(reason)


@mcphost.tool(timeout=1)
async def hang() -> str:
    """Never return."""
    await trio.sleep_forever()
    return "unreachable"


@mcphost.tool(timeout=1)
def block(seconds: float = 5) -> str:
    """Block its worker thread past its timeout."""
    time.sleep(seconds)
    return "done"


@mcphost.tool(timeout=30, max_concurrency=1)
def block_long(seconds: float = 5) -> str:
    """Block its worker thread for a while, within its timeout."""
    time.sleep(seconds)
    return "done"


@mcphost.tool(max_result_bytes=10_000)
def huge(size: int = 100_000) -> str:
    """Return a result larger than its limit."""
    return "x" * size


def bad_return() -> int:
    """Promise an int, return something else."""
    return "not a number"  # type: ignore[return-value]


def _exit(value: int) -> int:
    raise SystemExit(4)


def exit_validating() -> Annotated[int, AfterValidator(_exit)]:
    """Return a value whose declared type's validator tries to end the process."""
    return 1


def exit_process() -> str:
    """Try to take the whole daemon down."""
    raise SystemExit(3)
