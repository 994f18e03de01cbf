"""The reference: the MCP SDK's own ``MCPServer`` serving the no-op ``add`` tool (and
``add_async``, the same written ``async def``) over Streamable HTTP, on uvicorn (what a
Python user would pick) or on Hypercorn's Trio worker (mcphost's HTTP stack, to separate
the server's cost from the SDK's).

Run as ``python bench/apps/sdk_app.py --server uvicorn --port N``; with
``--plugins P --tools-per-plugin T`` it serves the generated ``P x T`` catalogue instead.
"""

from __future__ import annotations

import argparse
import functools
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from catalog import reference_tools
from mcp.server.mcpserver import MCPServer


def build(plugins: int, tools_per_plugin: int) -> MCPServer:
    """The server exactly as a user writes it: ``MCPServer("bench")`` and ``@mcp.tool()``."""
    mcp = MCPServer("bench")
    if plugins:
        for name, fn, description in reference_tools(plugins, tools_per_plugin):
            mcp.add_tool(fn, name=name, description=description)
    else:

        @mcp.tool()
        def add(a: int, b: int) -> int:
            """Add two integers."""
            return a + b

        # The same tool written async: the SDK runs it on the event loop, not in a thread.
        @mcp.tool()
        async def add_async(a: int, b: int) -> int:
            """Add two integers."""
            return a + b

    return mcp


def main() -> None:
    """Parse arguments and serve until killed."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--server", choices=("uvicorn", "hypercorn"), required=True)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--plugins", type=int, default=0)
    parser.add_argument("--tools-per-plugin", type=int, default=10)
    args = parser.parse_args()
    mcp = build(args.plugins, args.tools_per_plugin)
    # host="127.0.0.1" makes the SDK allow Host/Origin 127.0.0.1:* and localhost:* (its
    # DNS-rebinding protection stays on, as it is for any user binding to loopback).
    app = mcp.streamable_http_app(host="127.0.0.1")
    if args.server == "uvicorn":
        import uvicorn

        # The settings MCPServer.run(transport="streamable-http") uses: one worker, the
        # server's log level (INFO, so uvicorn writes an access-log line per request).
        uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=args.port, log_level="info")).run()
    else:
        import trio
        from hypercorn.config import Config
        from hypercorn.trio import serve

        config = Config()
        config.bind = [f"127.0.0.1:{args.port}"]
        # An access-log line per request, like uvicorn's above, so the two rows differ
        # only in the server and event loop.
        config.accesslog = "-"
        # Starlette answers the lifespan scope (and runs the SDK's session manager in it).
        # Starlette is an ASGI app; Hypercorn's annotations only know its own scope types.
        trio.run(functools.partial(serve, app, config))  # type: ignore[arg-type]


if __name__ == "__main__":
    main()
