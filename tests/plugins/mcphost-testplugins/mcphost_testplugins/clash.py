"""A plugin whose tool name collides with echo's once both use the prefix ``echo``."""

import mcphost


@mcphost.hookimpl
def mcphost_tools() -> list[object]:
    def echo(text: str) -> str:
        """Echo, again."""
        return text

    return [echo]
