"""``ToolContext``: what a tool may know and do about the call it is serving.

A tool asks for it by annotating a parameter ``ctx: mcphost.ToolContext``; that parameter
is left out of the tool's input schema. It hides the SDK's request context so plugins
depend on this small surface only.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Generic

from typing_extensions import TypeVar

from mcphost.settings import PluginSettings

if TYPE_CHECKING:
    from mcp.server.context import ServerRequestContext

SettingsT = TypeVar("SettingsT", bound=PluginSettings, default=PluginSettings)


@dataclass(frozen=True, slots=True)
class ToolContext(Generic[SettingsT]):
    """The calling request, as a tool sees it; ``ToolContext[Settings]`` types ``settings``."""

    plugin: str
    """The name of the plugin the tool belongs to."""
    tool: str
    """The tool's public name, prefix included."""
    settings: SettingsT
    """The plugin's validated settings."""
    _request: ServerRequestContext[Any, Any] | None = None

    @property
    def session_id(self) -> str | None:
        """The client's ``Mcp-Session-Id``, or ``None`` for stateless requests and stdio."""
        http_request = None if self._request is None else self._request.request
        headers = getattr(http_request, "headers", None)
        return headers.get("mcp-session-id") if headers is not None else None

    @property
    def protocol_version(self) -> str | None:
        """The protocol revision the client speaks on this request."""
        return None if self._request is None else self._request.protocol_version

    async def report_progress(self, progress: float, total: float | None = None, message: str | None = None) -> None:
        """Send a progress notification, if the client asked for progress on this call."""
        if self._request is None:
            return
        token = (self._request.meta or {}).get("progress_token")
        if token is None:
            return
        await self._request.session.send_progress_notification(
            token,
            progress,
            total=total,
            message=message,
            related_request_id=self._request.request_id,  # type: ignore[arg-type]  # the SDK routes by the id as sent
        )
