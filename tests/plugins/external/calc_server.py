"""An existing MCP server as a user writes it with the official SDK, on stdio: the tests
host it in mcphost with ``[plugins.calc] command = [python, this file]``."""

from __future__ import annotations

import os

import anyio
import mcp_types as types
from mcp.server.mcpserver import Context, MCPServer
from mcp.server.mcpserver.prompts import Prompt

mcp = MCPServer("calc")


@mcp.tool()
def add(a: int, b: int) -> int:
    """Add two integers."""
    return a + b


@mcp.tool()
def fail(reason: str) -> str:
    """Fail with a message."""
    raise ValueError(reason)


@mcp.tool()
def pid() -> int:
    """The server's process id."""
    return os.getpid()


@mcp.tool()
def crash(status: int = 9) -> str:
    """End the server at once."""
    os._exit(status)


@mcp.tool()
async def slow(seconds: float, ctx: Context) -> str:
    """Report progress each second, for ``seconds`` seconds."""
    for second in range(int(seconds)):
        await ctx.report_progress(second + 1, seconds)
        await anyio.sleep(1)
    return "done"


@mcp.tool()
async def roots(ctx: Context) -> list[str]:
    """The roots the client gave."""
    listed = await ctx.session.list_roots()
    return [str(root.uri) for root in listed.roots]


@mcp.tool()
async def grow(ctx: Context) -> str:
    """Add a tool ``multiply``, and tell the client the tools changed."""
    mcp.add_tool(multiply)
    await ctx.session.send_tool_list_changed()
    return "grown"


def multiply(a: int, b: int) -> int:
    """Multiply two integers."""
    return a * b


@mcp.tool()
async def teach(ctx: Context) -> str:
    """Add a prompt ``halve``, and tell the client the prompts changed."""
    mcp.add_prompt(Prompt.from_function(halve))
    await ctx.session.send_prompt_list_changed()
    return "taught"


def halve(number: str) -> str:
    """Ask for half of a number."""
    return f"What is half of {number}?"


@mcp.resource("calc://constants/answer", mime_type="text/plain")
def answer() -> str:
    """The answer."""
    return "42"


@mcp.resource("calc://square/{n}", mime_type="text/plain")
def square(n: str) -> str:
    """The square of ``n``."""
    return str(int(n) ** 2)


@mcp.prompt()
def double(number: str) -> str:
    """Ask for twice a number."""
    return f"What is twice {number}?"


@mcp.completion()
async def complete(
    ref: types.PromptReference | types.ResourceTemplateReference,
    argument: types.CompletionArgument,
    context: types.CompletionContext | None,
) -> types.Completion | None:
    """Numbers that start with what was typed, for ``double``'s argument and ``square``'s ``n``."""
    if isinstance(ref, types.PromptReference) and ref.name != "double":
        return None
    return types.Completion(values=[n for n in ("1", "12", "123", "7") if n.startswith(argument.value)])


if __name__ == "__main__":
    mcp.run("stdio")
