"""Raises BaseException subclasses from every place a plugin's code runs."""

from __future__ import annotations

from pydantic import BaseModel, field_validator

import mcphost


class Escape(BaseException):
    """Not an Exception: what a plugin raises to get past ``except Exception``."""


def _raise(kind: str) -> None:
    raise {"interrupt": KeyboardInterrupt, "generator_exit": GeneratorExit, "escape": Escape, "exit": SystemExit}[kind](
        "from the raiser plugin"
    )


def sync_raise(kind: str) -> str:
    """Raise ``kind`` in a thread."""
    _raise(kind)
    return "unreachable"


async def async_raise(kind: str) -> str:
    """Raise ``kind`` on the event loop."""
    _raise(kind)
    return "unreachable"


async def context_raise(kind: str, ctx: mcphost.ToolContext) -> str:
    """Raise ``kind`` on the event loop, from a tool with a context."""
    await ctx.log("info", "about to raise")
    _raise(kind)
    return "unreachable"


class Checked(BaseModel):
    """An argument whose validator, the plugin's code, raises."""

    kind: str

    @field_validator("kind")
    @classmethod
    def check(cls, kind: str) -> str:
        _raise(kind)
        return kind


def validated_raise(argument: Checked) -> str:
    """Never runs: validating its argument raises."""
    return "unreachable"


def read_raise(kind: str) -> str:
    """A resource that raises ``kind``."""
    _raise(kind)
    return "unreachable"


def prompt_raise(kind: str) -> str:
    """A prompt that raises ``kind``."""
    _raise(kind)
    return "unreachable"


async def complete_raise(value: str, given: dict[str, str]) -> list[str]:
    _raise("interrupt")
    return []


@mcphost.hookimpl
def mcphost_tools():
    return [sync_raise, async_raise, context_raise, validated_raise]


@mcphost.hookimpl
def mcphost_resources():
    return [mcphost.resource("raiser://{kind}", complete={"kind": complete_raise})(read_raise)]


@mcphost.hookimpl
def mcphost_prompts():
    return [prompt_raise]


@mcphost.hookimpl
def mcphost_ready():
    raise KeyboardInterrupt("from the raiser's readiness check")
