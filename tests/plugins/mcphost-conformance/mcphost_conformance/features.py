"""The parts of mcphost's plugin API the conformance suite does not exercise, for mcphost's
own tests: structured output, resource links, announcing resource updates, cancellation,
a sync tool talking to the client from its worker thread, logging levels, roots, a tool
asking the client with the low-level 2026-07-28 API."""

from __future__ import annotations

import time
from typing import Any

import trio
from pydantic import BaseModel

import mcphost
from mcphost import types


class Forecast(BaseModel):
    """A weather forecast: structured content with an output schema."""

    city: str
    high: int
    conditions: list[str]


@mcphost.hookimpl
def mcphost_tools() -> list[object]:
    return [
        forecast,
        links,
        announce,
        wait,
        block,
        count_in_thread,
        log_levels,
        roots,
        identity,
        long_report,
        confirm_by_hand,
    ]


def forecast(city: str) -> Forecast:
    """Tomorrow's forecast for a city."""
    return Forecast(city=city, high=21, conditions=["sunny", "breezy"])


def links() -> list[types.TextContent | types.ResourceLink]:
    """Text and a link to a resource the client may read."""
    link = types.ResourceLink(
        type="resource_link", uri="test://static-text", name="static-text", mime_type="text/plain"
    )
    return [types.TextContent(type="text", text="See the linked resource."), link]


async def announce(uri: str) -> str:
    """Announce that a resource changed."""
    await mcphost.notify_resource_updated(uri)
    return f"announced {uri}"


@mcphost.tool(timeout=60)
async def wait(seconds: float) -> str:
    """Sleep, cancellably."""
    await trio.sleep(seconds)
    return "waited"


@mcphost.tool(timeout=60)
def block(seconds: float) -> str:
    """Block a worker thread (which cannot be cancelled, only abandoned)."""
    time.sleep(seconds)
    return "blocked"


def count_in_thread(ctx: mcphost.ToolContext) -> str:
    """A sync tool reporting progress from its worker thread."""
    for step in (1, 2, 3):
        trio.from_thread.run(ctx.report_progress, step, 3)
    return "counted"


async def log_levels(ctx: mcphost.ToolContext) -> str:
    """Log one message at each of four levels."""
    for level in ("debug", "info", "warning", "error"):
        await ctx.log(level, f"{level} message", logger="features")
    return "logged"


async def roots(ctx: mcphost.ToolContext) -> list[str]:
    """The client's roots."""
    return [str(root.uri) for root in (await ctx.list_roots()).roots]


def identity(ctx: mcphost.ToolContext) -> str:
    """Who the host says is calling."""
    return repr(ctx.identity)


@mcphost.tool(task="optional", timeout=300)
async def long_report(steps: int, ctx: mcphost.ToolContext) -> str:
    """Works through ``steps`` steps of a second each, reporting progress (as a task, for a
    client that accepts tasks)."""
    await ctx.detach()
    for step in range(1, steps + 1):
        await ctx.report_progress(step, steps, f"step {step}")
        await trio.sleep(1)
    return f"{steps} steps done"


async def confirm_by_hand(ctx: mcphost.ToolContext) -> Any:
    """Ask for a confirmation by returning an ``InputRequiredResult`` itself (2026-07-28)."""
    answer = ctx.input_responses.get("confirm")
    if answer is None:
        schema = {"type": "object", "properties": {"ok": {"type": "boolean"}}}
        question = types.ElicitRequest(
            params=types.ElicitRequestFormParams(message="Please confirm", requested_schema=schema)
        )
        return types.InputRequiredResult(input_requests={"confirm": question}, request_state="asked")
    return f"confirmed={answer['content']['ok']} after {ctx.request_state}"
