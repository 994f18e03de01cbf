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

from mcphost.context import ToolContext
from mcphost.definitions import PromptDef, ResourceDef, ToolDef, prompt, resource, tool
from mcphost.errors import ToolError
from mcphost.hookspecs import hookimpl
from mcphost.settings import PluginSettings

try:
    __version__ = version("mcphost")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0.0.0"

__all__ = [
    "PluginSettings",
    "PromptDef",
    "ResourceDef",
    "ToolContext",
    "ToolDef",
    "ToolError",
    "__version__",
    "hookimpl",
    "prompt",
    "resource",
    "tool",
]
