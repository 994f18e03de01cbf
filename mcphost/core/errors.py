"""Errors a plugin may raise on purpose, and the host's own error vocabulary: every JSON-RPC
error code a client may see from mcphost, in one place (``docs/reference/http.md`` lists them).
"""

from __future__ import annotations

from typing import Final

from mcp_types import INTERNAL_ERROR, INVALID_PARAMS, INVALID_REQUEST, METHOD_NOT_FOUND, PARSE_ERROR

__all__ = [
    "AUTHENTICATION_REQUIRED",
    "ERROR_META_KEY",
    "INTERNAL_ERROR",
    "INVALID_PARAMS",
    "INVALID_REQUEST",
    "METHOD_NOT_FOUND",
    "NOT_PERMITTED",
    "PARSE_ERROR",
    "RATE_LIMITED",
    "TOOL_TIMEOUT",
    "UNAVAILABLE",
    "PluginLoadError",
    "ToolError",
]

AUTHENTICATION_REQUIRED: Final = -32001
"""HTTP 401: the request carries no credentials."""
NOT_PERMITTED: Final = -32002
"""Invalid credentials (HTTP 401, so the client re-authenticates, as the MCP authorization
spec requires) or valid ones that are not permitted (HTTP 403)."""
RATE_LIMITED: Final = -32003
"""HTTP 429 for the caller's request budget; in an ``isError`` result for a plugin or tool limit."""
UNAVAILABLE: Final = -32004
"""HTTP 503: the daemon cannot serve the request right now (draining, identity provider unreachable)."""
TOOL_TIMEOUT: Final = -32005
"""A tool overran its timeout; carried in the ``isError`` result's ``_meta`` (see ``ERROR_META_KEY``)."""
ERROR_META_KEY: Final = "mcphost/error"
"""The ``_meta`` key of an ``isError`` result that has an error code: ``{"code": …, …}``."""


class ToolError(Exception):
    """Raise from a tool to fail the call with this message shown to the client.

    Any other exception also fails the call, but its text stays in the server log and the
    client sees only that the tool failed: an unexpected exception may carry secrets.
    """


class PluginLoadError(Exception):
    """A plugin could not be loaded; the message says why and names the plugin."""
