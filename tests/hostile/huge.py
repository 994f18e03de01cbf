"""Returns results far over the default limit (1 MiB): a million small dicts, a list of
models, a huge string."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel

import mcphost


class Row(BaseModel):
    """One row of a big answer."""

    i: int


def many_dicts() -> list[dict[str, Any]]:
    """A million small dicts, built in a thread."""
    return [{"i": i} for i in range(1_000_000)]


async def many_dicts_async() -> Any:
    """A million small dicts, built on the event loop (untyped: no output schema)."""
    return [{"i": i} for i in range(1_000_000)]


def many_models() -> list[Row]:
    """Three hundred thousand models."""
    return [Row(i=i) for i in range(300_000)]


def big_string(megabytes: int) -> str:
    """One string of ``megabytes`` MiB."""
    return "x" * (megabytes << 20)


@mcphost.hookimpl
def mcphost_tools():
    return [many_dicts, many_dicts_async, many_models, big_string]


@mcphost.hookimpl
def mcphost_resources():
    return [mcphost.resource("huge://rows")(many_models)]
