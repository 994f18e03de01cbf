"""The plugin contract: every hook a plugin may implement, typed and documented.

A plugin is an importable module (or object) registered under the entry-point group
``mcphost``; the entry point's name is the plugin's name. It implements any subset of the
hooks below with ``@mcphost.hookimpl``. Each hook receives only the arguments it names.

The host calls each plugin's hooks one plugin at a time, inside that plugin's fence
(:mod:`mcphost.plugins.fence`), so a failing hook marks its own plugin failed and nothing else.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import pluggy

if TYPE_CHECKING:
    from mcphost.plugins.definitions import PromptDef, ResourceDef, ToolDef
    from mcphost.plugins.settings import PluginSettings

PROJECT_NAME = "mcphost"
"""The pluggy project name, which is also the entry-point group plugins register under."""

hookspec = pluggy.HookspecMarker(PROJECT_NAME)
hookimpl = pluggy.HookimplMarker(PROJECT_NAME)
"""Marks a plugin's function as the implementation of the hook of the same name."""


@hookspec(firstresult=True)
def mcphost_settings_model() -> type[PluginSettings]:  # type: ignore[empty-body]
    """Return the pydantic model (a ``mcphost.PluginSettings`` subclass) of this plugin's
    ``[plugins.<name>.settings]`` table; without it the plugin takes no settings.

    .. versionadded:: 0.1
    """


@hookspec
def mcphost_tools(settings: PluginSettings) -> Sequence[Callable[..., Any] | ToolDef]:  # type: ignore[empty-body]
    """Return the plugin's tools: plain typed functions, sync or async, optionally decorated
    with ``@mcphost.tool``; the input schema comes from their type hints and docstring.

    :param settings: this plugin's validated settings.

    .. versionadded:: 0.1
    """


@hookspec
def mcphost_resources(settings: PluginSettings) -> Sequence[Callable[..., Any] | ResourceDef]:  # type: ignore[empty-body]
    """Return the plugin's resources: functions decorated with ``@mcphost.resource(uri)``;
    a URI with ``{placeholders}`` makes a resource template.

    :param settings: this plugin's validated settings.

    .. versionadded:: 0.1
    """


@hookspec
def mcphost_prompts(settings: PluginSettings) -> Sequence[Callable[..., Any] | PromptDef]:  # type: ignore[empty-body]
    """Return the plugin's prompts: functions returning a string or messages, optionally
    decorated with ``@mcphost.prompt``; their parameters are the prompt's arguments.

    :param settings: this plugin's validated settings.

    .. versionadded:: 0.1
    """


@hookspec
async def mcphost_startup(settings: PluginSettings) -> None:
    """Acquire what the plugin's tools need (connections, caches) before it serves; may be
    async. An exception here marks the plugin failed.

    :param settings: this plugin's validated settings.

    .. versionadded:: 0.1
    """


@hookspec
async def mcphost_shutdown(settings: PluginSettings) -> None:
    """Release what ``mcphost_startup`` acquired; may be async. Called once, at shutdown or
    when the plugin is unloaded.

    :param settings: this plugin's validated settings.

    .. versionadded:: 0.1
    """


@hookspec
def mcphost_ready(settings: PluginSettings) -> bool:  # type: ignore[empty-body]
    """Report whether the plugin can serve right now (its backend reachable, say); may be
    async. ``False`` or an exception makes it not ready, shown in ``/ready``.

    :param settings: this plugin's validated settings.

    .. versionadded:: 0.1
    """
