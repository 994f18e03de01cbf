"""The tools the conformance suite's tasks scenarios call (SEP-2663), with the names and
behaviour the suite expects."""

from __future__ import annotations

import trio
from mcp.shared.exceptions import MCPError

import mcphost
from mcphost import types

CONFIRM_SCHEMA = {"type": "object", "properties": {"confirm": {"type": "boolean"}}, "required": ["confirm"]}
NAME_SCHEMA = {
    "type": "object",
    "properties": {"name": {"type": "string"}, "confirm": {"type": "boolean"}},
    "required": ["name"],
}


@mcphost.tool(task="forbidden")
def greet(name: str) -> str:
    """Greets someone, at once (never a task)"""
    return f"Hello, {name}!"


@mcphost.tool(task="optional", timeout=300)
async def slow_compute(seconds: float, ctx: mcphost.ToolContext, label: str = "") -> str:
    """Computes for a while: a task for a client that accepts them, unless it takes no time"""
    if seconds > 0:
        await ctx.detach()
    await trio.sleep(seconds)
    return f"computed {label or 'result'} in {seconds:g}s"


@mcphost.tool(task="required", timeout=60)
async def failing_job(ctx: mcphost.ToolContext) -> str:
    """A job that must run as a task and ends in a tool error"""
    await ctx.detach()
    await trio.sleep(1)
    raise mcphost.ToolError("the job failed")


@mcphost.tool(task="required", timeout=60)
async def protocol_error_job(ctx: mcphost.ToolContext) -> str:
    """A job that must run as a task and ends in a protocol error"""
    await ctx.detach()
    await trio.sleep(0.2)
    raise MCPError(code=types.INTERNAL_ERROR, message="the job hit an internal error")


@mcphost.tool(task="required", timeout=120)
async def confirm_delete(filename: str, ctx: mcphost.ToolContext) -> str:
    """Deletes a file after the user confirms, as a task"""
    await ctx.detach()
    answer = await ctx.elicit(f"Delete {filename}?", CONFIRM_SCHEMA, key="confirm_delete")
    return f"{filename}: action={answer.action}"


@mcphost.tool(task="required", timeout=120)
async def multi_input(ctx: mcphost.ToolContext) -> str:
    """Asks two questions at once, as a task"""
    await ctx.detach()
    first, second = await ctx.gather(
        ctx.elicit("Who are you?", NAME_SCHEMA, key="first"),
        ctx.elicit("Who is with you?", NAME_SCHEMA, key="second"),
    )
    return f"{(first.content or {}).get('name')} and {(second.content or {}).get('name')}"


@mcphost.tool(task="required", timeout=120)
async def test_tool_with_task(ctx: mcphost.ToolContext) -> str:
    """Asks for a name on the request, then goes on as a task"""
    answer = await ctx.elicit("What is your name?", {"type": "object", "properties": {"name": {"type": "string"}}})
    await ctx.detach()
    await trio.sleep(0.2)
    return f"Hello, {(answer.content or {}).get('name')}!"


TOOLS = [greet, slow_compute, failing_job, protocol_error_job, confirm_delete, multi_input, test_tool_with_task]
