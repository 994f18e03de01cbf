"""mcphost: a production MCP host daemon.

This package's top level is the plugin author's API; everything a plugin needs is here::

    import mcphost

    class Settings(mcphost.PluginSettings):
        mounts: list[str] = ["/"]

    @mcphost.hookimpl
    def mcphost_settings_model():
        return Settings

    @mcphost.hookimpl
    def mcphost_tools(settings: Settings):
        return [disk_usage]
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import mcp_types as types
    from mcp.server.mcpserver.utilities.types import Audio, Image

    from mcphost.core.errors import ToolError
    from mcphost.plugins.context import ToolContext
    from mcphost.plugins.definitions import Completer, PromptDef, ResourceDef, ToolDef, prompt, resource, tool
    from mcphost.plugins.hookspecs import hookimpl
    from mcphost.plugins.notify import notify_resource_updated
    from mcphost.plugins.settings import PluginSettings

    __version__: str

# Each name's module, imported on first use. The ``mcphost`` command imports this package
# before it prepares start-up (mcphost.__main__.prepare: the collector paused, the SDK's
# wire models deferred), so the MCP SDK, most of start-up, must not be imported here.
_EXPORTS = {
    "Audio": "mcp.server.mcpserver.utilities.types",
    "Completer": "mcphost.plugins.definitions",
    "Image": "mcp.server.mcpserver.utilities.types",
    "PluginSettings": "mcphost.plugins.settings",
    "PromptDef": "mcphost.plugins.definitions",
    "ResourceDef": "mcphost.plugins.definitions",
    "ToolContext": "mcphost.plugins.context",
    "ToolDef": "mcphost.plugins.definitions",
    "ToolError": "mcphost.core.errors",
    "hookimpl": "mcphost.plugins.hookspecs",
    "notify_resource_updated": "mcphost.plugins.notify",
    "prompt": "mcphost.plugins.definitions",
    "resource": "mcphost.plugins.definitions",
    "tool": "mcphost.plugins.definitions",
}


def __getattr__(name: str) -> Any:
    """The plugin API's names and ``__version__``, found when first asked for (PEP 562)."""
    if name == "types":
        value: Any = importlib.import_module("mcp_types")
    elif name == "__version__":
        from mcphost.core.version import version

        value = version()
    elif name in _EXPORTS:
        value = getattr(importlib.import_module(_EXPORTS[name]), name)
    else:
        raise AttributeError(f"module 'mcphost' has no attribute {name!r}")
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    """The module's names, the plugin API's included before first use."""
    return sorted({*globals(), *__all__})


__all__ = [
    "Audio",
    "Completer",
    "Image",
    "PluginSettings",
    "PromptDef",
    "ResourceDef",
    "ToolContext",
    "ToolDef",
    "ToolError",
    "__version__",
    "hookimpl",
    "notify_resource_updated",
    "prompt",
    "resource",
    "tool",
    "types",
]
