"""Errors a plugin may raise on purpose, and the host's own error vocabulary."""

from __future__ import annotations


class ToolError(Exception):
    """Raise from a tool to fail the call with this message shown to the client.

    Any other exception also fails the call, but its text stays in the server log and the
    client sees only that the tool failed: an unexpected exception may carry secrets.
    """


class PluginLoadError(Exception):
    """A plugin could not be loaded; the message says why and names the plugin."""
