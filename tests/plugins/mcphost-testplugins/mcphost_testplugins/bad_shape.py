"""A plugin whose hook returns the wrong shape."""

import mcphost


@mcphost.hookimpl
def mcphost_tools() -> object:
    return "echo"
