"""A well-behaved plugin: tools, a resource, a template and a prompt, with settings."""

from __future__ import annotations

import os
import time

import trio
from pydantic import BaseModel, SecretStr

import mcphost


class Settings(mcphost.PluginSettings):
    """Echo's settings."""

    greeting: str = "hello"
    signature: SecretStr | None = None
    """Unused: a secret setting, which no error message may show."""


class Sum(BaseModel):
    """A sum and its operands."""

    a: int
    b: int
    total: int


@mcphost.hookimpl
def mcphost_settings_model() -> type[Settings]:
    return Settings


@mcphost.hookimpl
def mcphost_tools(settings: Settings) -> list[object]:
    def greet(name: str) -> str:
        """Greet someone with the configured greeting."""
        return f"{settings.greeting}, {name}"

    return [greet, echo, add, slow, sleep_sync, whoami]


def echo(text: str) -> str:
    """Return the text unchanged."""
    return text


def add(a: int, b: int) -> Sum:
    """Add two integers."""
    return Sum(a=a, b=b, total=a + b)


@mcphost.tool(timeout=30)
async def slow(seconds: float, ctx: mcphost.ToolContext) -> str:
    """Sleep asynchronously, reporting progress each tenth of the way."""
    for step in range(1, 11):
        await trio.sleep(seconds / 10)
        await ctx.report_progress(step, 10, f"step {step}")
    return f"slept {seconds}"


def sleep_sync(seconds: float) -> str:
    """Block a worker thread for a while."""
    time.sleep(seconds)
    return f"blocked {seconds}"


async def whoami(ctx: mcphost.ToolContext) -> dict[str, str | None]:
    """Report what the tool context says about this call, and which process ran it."""
    return {
        "pid": str(os.getpid()),
        "plugin": ctx.plugin,
        "tool": ctx.tool,
        "session_id": ctx.session_id,
        "identity": ctx.identity,
        "protocol_version": ctx.protocol_version,
    }


@mcphost.hookimpl
def mcphost_resources(settings: Settings) -> list[object]:
    @mcphost.resource("echo://greeting", mime_type="text/plain")
    def greeting() -> str:
        """The configured greeting."""
        return settings.greeting

    @mcphost.resource("echo://upper/{word}")
    def upper(word: str) -> str:
        """A word in capitals."""
        return word.upper()

    return [greeting, upper]


@mcphost.hookimpl
def mcphost_prompts(settings: Settings) -> list[object]:
    @mcphost.prompt(name="review")
    def review(subject: str) -> str:
        """Ask for a review of a subject."""
        return f"Please review {subject}."

    return [review]
