"""A plugin whose hook raises while it loads."""

import mcphost


@mcphost.hookimpl
def mcphost_tools() -> list[object]:
    raise RuntimeError("cannot list tools")
