"""Direct answers: the commonest requests answered in the request's own task.

A ``tools/call`` of a tool that takes no ``ToolContext`` and asks for no progress (or of a
tool the caller cannot see, which fails at once), or a ``tools/list``, can send nothing
before its response. For such a request the SDK's
transports still build what a talking request needs: on 2025-11-25 a memory stream to the
session's task, a task per request and an SSE response; on 2026-07-28 a Starlette request, a
per-request connection and server session, and the middleware chain. That machinery costs
more than the call. Here the request is checked, run and answered in place, with the SDK's
own pieces where they decide something: its parameter validation for the negotiated
revision, its 2026-07-28 routing-header ladder, its ``Mcp-Param`` check, its result shaping
and its error mapping.

Only a request recognised in full is taken. Anything else (a malformed envelope, a header
that disagrees with the body, parameters that fail validation, a progress token, a tool
with a ``ToolContext``, tracing switched on) goes the SDK's way, which answers every error
exactly as the SDK does; nothing has run by the time that choice is made.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import mcp_types as types
import pydantic_core
import trio
from mcp.server.connection import Connection
from mcp.server.lowlevel.server import Server
from mcp.server.runner import ServerRunner, modern_error_data
from mcp.server.streamable_http import REQUEST_CANCELLED, check_accept_headers
from mcp.server.transport_security import TransportSecurityMiddleware, TransportSecuritySettings
from mcp.shared.inbound import (
    ERROR_CODE_HTTP_STATUS,
    InboundModernRoute,
    classify_inbound_request,
    find_duplicated_routing_header,
    validate_mcp_param_headers,
)
from mcp_types import methods
from mcp_types.version import LATEST_MODERN_VERSION, MODERN_PROTOCOL_VERSIONS
from pydantic import ValidationError
from starlette.requests import Request
from starlette.types import Scope

from mcphost.auth.identity import may_use
from mcphost.ops.log import current_request
from mcphost.ops.metrics import CANCELLED, Metrics, rpc_code
from mcphost.plugins.registry import Registry
from mcphost.protocol.handlers import Handlers
from mcphost.protocol.wire import NOTIFYING_META_KEYS

# Parameters that carry a multi-round exchange (requestState, inputResponses) need the SDK's
# request-state boundary; a direct answer takes none of them.
_TOOL_CALL_PARAMS = frozenset({"name", "arguments", "_meta"})
_LIST_PARAMS = frozenset({"cursor", "_meta"})


class DirectAnswers:
    """Answers the requests :meth:`takes` accepts, as the SDK would answer them."""

    def __init__(
        self,
        server: Server[Any],
        handlers: Handlers,
        get_registry: Callable[[], Registry],
        metrics: Metrics,
        security: TransportSecuritySettings,
    ):
        self.handlers = handlers
        self.get_registry = get_registry
        self.metrics = metrics
        self.security = TransportSecurityMiddleware(security)
        # Only its result shaping is used, which reads the server, never the connection.
        self._shaper = ServerRunner(server, Connection.from_envelope(LATEST_MODERN_VERSION, None, {}), None)
        self._running: dict[tuple[str, Any], trio.CancelScope] = {}
        """2025-11-25 calls in flight by (session, request id), for ``notifications/cancelled``."""

    def takes(self, message: Any) -> bool:
        """Whether ``message`` (a decoded body) is a request that can send nothing before
        its response and that this module answers in full."""
        if not isinstance(message, dict) or message.get("jsonrpc") != "2.0" or len(message) > 4:
            return False
        request_id, params = message.get("id"), message.get("params", {})
        if isinstance(request_id, bool) or not isinstance(request_id, int | str) or not isinstance(params, dict):
            return False
        meta = params.get("_meta")
        if meta is not None and (not isinstance(meta, dict) or meta.keys() & NOTIFYING_META_KEYS):
            return False
        method = message.get("method")
        if method == "tools/list":
            return params.keys() <= _LIST_PARAMS
        if method != "tools/call" or not params.keys() <= _TOOL_CALL_PARAMS:
            return False
        name = params.get("name")
        if not isinstance(name, str):
            return False  # the SDK's validation names the field
        tool = self.get_registry().tools.get(name)
        # A tool the caller may not see is answered here whether it exists or not, so that one
        # outside the caller's scopes and an unknown one get the same answer, to the byte.
        if tool is None or not may_use(name):
            return True
        # A call that may become a task needs the SDK's request context, as one with a ToolContext does.
        tasks = self.handlers.tasks
        return tool.context_param is None and (tasks is None or tasks.support(tool) == "forbidden")

    async def modern_route(self, scope: Scope, message: dict[str, Any], sse: bool) -> bool:
        """Whether a 2026-07-28 request :meth:`takes` passes every check the SDK makes
        before dispatch (Host, Origin, Content-Type, Accept, the routing-header ladder,
        ``Mcp-Param`` headers); when one would refuse it, the SDK answers with the refusal."""
        request = Request(scope)
        if not await self._transport_checks(request, sse):
            return False
        raw = [(k.decode("latin-1"), v.decode("latin-1")) for k, v in scope["headers"]]
        if find_duplicated_routing_header(raw) is not None:
            return False
        # First value wins, as in Starlette's Headers (which the SDK reads them through).
        headers = dict(reversed(raw))
        if not isinstance(classify_inbound_request(message, headers=headers), InboundModernRoute):
            return False
        params = message.get("params", {})
        if message["method"] != "tools/call":
            return True
        arguments = params.get("arguments") or {}
        if not isinstance(arguments, Mapping):
            return False
        # A tool whose schema declares no x-mcp-header has no Mcp-Param header to agree with
        # its arguments: the SDK's check passes it whatever the headers say.
        if params["name"] not in self.get_registry().header_params:
            return True
        schema = self.handlers.input_schema(params["name"])
        return schema is None or validate_mcp_param_headers(schema, arguments, request.headers) is None

    async def legacy_route(self, scope: Scope, sse: bool) -> bool:
        """Whether a 2025-11-25 request to an open session passes the transport's checks
        (Host, Origin, Content-Type, Accept)."""
        return await self._transport_checks(Request(scope), sse)

    async def _transport_checks(self, request: Request, sse: bool) -> bool:
        if await self.security.validate_request(request, is_post=True) is not None:
            return False
        has_json, has_sse = check_accept_headers(request)
        # In SSE mode the SDK insists the client accepts both, though it may answer with JSON.
        return has_json and (has_sse or not sse)

    @contextlib.contextmanager
    def cancellable(self, session_id: str, request_id: Any) -> Iterator[trio.CancelScope]:
        """A scope that :meth:`cancel` cancels: a 2025-11-25 client cancels a request by
        naming it in ``notifications/cancelled`` on its session."""
        key = (session_id, request_id)
        with trio.CancelScope() as scope:
            self._running[key] = scope
            try:
                yield scope
            finally:
                if self._running.get(key) is scope:
                    del self._running[key]

    def cancel(self, session_id: str, notification: Any) -> None:
        """Act on a ``notifications/cancelled`` the session's client posted (a decoded body)."""
        params = notification.get("params") if isinstance(notification, dict) else None
        request_id = params.get("requestId") if isinstance(params, dict) else None
        if isinstance(request_id, int | str) and (scope := self._running.get((session_id, request_id))) is not None:
            scope.cancel()

    @staticmethod
    def cancelled(request_id: Any) -> bytes:
        """The 2025-11-25 answer to a request its client cancelled: that wire ends a request
        only with a response, so the SDK answers ``REQUEST_CANCELLED`` (2026-07-28 never does)."""
        error = {"code": REQUEST_CANCELLED, "message": "Request cancelled"}
        return json.dumps({"jsonrpc": "2.0", "id": request_id, "error": error}, separators=(",", ":")).encode()

    def prepared(self, message: dict[str, Any], version: str) -> Call | None:
        """A request :meth:`takes`, with its parameters validated as the SDK validates them
        at protocol ``version``; ``None`` when they fail (the SDK answers with the error)."""
        method, params = message["method"], message.get("params", {})
        try:
            methods.validate_client_request(method, version, params)
            model = types.CallToolRequestParams if method == "tools/call" else types.PaginatedRequestParams
            return Call(method, message["id"], version, model.model_validate(params, by_name=False))
        except ValidationError:
            return None

    async def answer(self, call: Call) -> tuple[int, bytes]:
        """Run a prepared call: the HTTP status and JSON body of its answer."""
        record = current_request.get()
        if record is not None:
            record.method = call.method
        code = "ok"
        try:
            if call.method == "tools/call":
                result: Any = await self.handlers.call_tool(None, call.params)
            else:
                result = await self.handlers.list_tools(None, call.params)
            if isinstance(result, types.InputRequiredResult):
                # Only a tool with a ToolContext can carry a multi-round exchange.
                raise TypeError("a tool without a ToolContext asked for input")
            shaped = self._shaper._serialize(call.method, call.version, result)
            body: dict[str, Any] = {"jsonrpc": "2.0", "id": call.request_id, "result": shaped}
            status = 200
        except Exception as error:
            data = modern_error_data(error)
            code = rpc_code(data.code)
            if record is not None:
                record.rpc_error = data.code
            error_data = data.model_dump(by_alias=True, exclude_none=True)
            body = {"jsonrpc": "2.0", "id": call.request_id, "error": error_data}
            modern = call.version in MODERN_PROTOCOL_VERSIONS
            status = ERROR_CODE_HTTP_STATUS.get(data.code, 200) if modern else 200
        except BaseException:
            code = CANCELLED
            raise
        finally:
            self.metrics.request(call.method, call.version, code)
        return status, pydantic_core.to_json(body)


@dataclass(frozen=True, slots=True)
class Call:
    """A request :class:`DirectAnswers` will answer, its parameters validated."""

    method: str
    request_id: Any
    version: str
    params: Any
