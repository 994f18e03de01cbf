"""The ``ToolContext`` a tool gets in a worker: the same surface as inline, answered over the
wire by the daemon, which holds the client's request.

What the context knows of the call (session, revision, caller, client capabilities) comes
with the call in ``_meta``; what it does (progress, log messages, questions to the client)
is a request to the daemon, which does it on the call's own request: answered before the
tool goes on, so nothing arrives after the call's result.
"""

from __future__ import annotations

from typing import Any

import mcp_types as types
from mcp.shared.exceptions import MCPError

from mcphost.plugins import client_input
from mcphost.plugins.context import LogLevel, ToolContext
from mcphost.plugins.worker.wire import Channel, RemoteError

STALLED = "mcphost/stalled"
"""A worker's notification that its loop-stall watchdog found the plugin's code holding its
event loop (``{}``), or stopped a call that held it past the stall timeout
(``{"degraded": what happened}``)."""
META_REQUEST = "mcphost/request"
"""``_meta`` key of a call: the daemon's request id, session, caller and client, for the
call's context and its log lines."""
INPUT_REQUIRED = -32042
"""Error code of a ``mcphost/ask`` the daemon cannot answer in this round (2026-07-28: the
call ends with an ``InputRequiredResult`` and runs again with the answer)."""


class WorkerToolContext(ToolContext):
    """A :class:`ToolContext` whose request lives in the daemon."""

    __slots__ = ("_call", "_channel", "_meta")

    def __init__(self, plugin: str, tool: str, settings: Any, meta: dict[str, Any], channel: Channel, call: Any):
        super().__init__(plugin, tool, settings)
        self._meta = meta
        self._channel = channel
        self._call = call

    @property
    def session_id(self) -> str | None:
        """The client's ``Mcp-Session-Id``, or ``None``."""
        return self._meta.get("session")

    @property
    def protocol_version(self) -> str | None:
        """The protocol revision the client speaks on this request."""
        return self._meta.get("protocol_version")

    @property
    def identity(self) -> str | None:
        """Who is calling (a key's name or a token's subject), or ``None``."""
        return self._meta.get("identity")

    @property
    def client_capabilities(self) -> types.ClientCapabilities | None:
        """What the client declared it can do, or ``None``."""
        declared = self._meta.get("capabilities")
        return None if declared is None else types.ClientCapabilities.model_validate(declared)

    @property
    def input_responses(self) -> dict[str, Any]:
        """2026-07-28: the client's answers to a previous round's questions, by key."""
        return self._meta.get("input_responses") or {}

    @property
    def request_state(self) -> str | None:
        """2026-07-28: the verified ``request_state`` of the previous round."""
        return self._meta.get("request_state")

    async def report_progress(self, progress: float, total: float | None = None, message: str | None = None) -> None:
        """Send a progress notification, if the client asked for progress on this call."""
        await self._channel.request(
            "mcphost/progress", {"call": self._call, "progress": progress, "total": total, "message": message}
        )

    async def detach(self) -> bool:
        """Go on as a task, if the client accepts tasks (see :meth:`ToolContext.detach`)."""
        return bool(await self._channel.request("mcphost/detach", {"call": self._call}))

    async def close_sse_stream(self) -> None:
        """End the SSE stream this call answers on (see :meth:`ToolContext.close_sse_stream`)."""
        await self._channel.request("mcphost/close_sse_stream", {"call": self._call})

    async def log(self, level: LogLevel, data: Any, logger: str | None = None) -> None:
        """Send a log message to the client, if it wants that level."""
        await self._channel.request("mcphost/log", {"call": self._call, "level": level, "data": data, "logger": logger})

    async def _ask(
        self, request: types.InputRequest, result_type: type[client_input.ResultT], key: str | None, kind: str
    ) -> client_input.ResultT:
        params = {
            "call": self._call,
            "kind": kind,
            "key": key,
            "request": request.model_dump(mode="json", by_alias=True, exclude_none=True),
        }
        try:
            answer = await self._channel.request("mcphost/ask", params)
        except RemoteError as error:
            if error.code == INPUT_REQUIRED:
                raise client_input.InputRequired from None
            if error.code == types.MISSING_REQUIRED_CLIENT_CAPABILITY:
                raise MCPError(code=error.code, message=str(error), data=error.data) from None
            raise client_input.ClientInputError(str(error)) from None
        return result_type.model_validate(answer, by_name=False)
