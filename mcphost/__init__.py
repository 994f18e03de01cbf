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

from importlib.metadata import PackageNotFoundError, version

import mcp_types as types
from mcp.server.mcpserver.utilities.types import Audio, Image

from mcphost.context import ToolContext
from mcphost.definitions import Completer, PromptDef, ResourceDef, ToolDef, prompt, resource, tool
from mcphost.errors import ToolError
from mcphost.hookspecs import hookimpl
from mcphost.settings import PluginSettings
from mcphost.subscriptions import notify_resource_updated

try:
    __version__ = version("mcphost")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0.0.0"

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
