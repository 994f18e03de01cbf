"""The MCP handlers: the SDK's low-level server answering from the current registry.

Each handler reads the registry once (``get_registry()``), so a reload that swaps it
mid-request is never seen half-way. Tool, resource, prompt and completion functions run
through :mod:`mcphost.plugins.fence`; this module turns their values and failures into MCP results.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, cast

import mcp_types as types
import structlog
from mcp.server.context import CallNext, HandlerResult, ServerRequestContext
from mcp.server.lowlevel.server import Server
from mcp.server.request_state import RequestStateBoundary, RequestStateSecurity
from mcp.shared.exceptions import MCPError
from mcp_types.version import MODERN_PROTOCOL_VERSIONS
from pydantic import ValidationError

from mcphost.auth.identity import current_identity, may_read, may_use, visible
from mcphost.auth.ratelimit import RateLimits
from mcphost.core.errors import ERROR_META_KEY, RATE_LIMITED, TOOL_TIMEOUT
from mcphost.ops.drain import Drain
from mcphost.ops.log import RequestRecord, current_request
from mcphost.ops.metrics import Metrics, RequestMetrics
from mcphost.plugins import client_input, fence, notify, results, serving
from mcphost.plugins.context import LOG_LEVEL_STATE_KEY, ToolContext, connection_of
from mcphost.plugins.registry import RegisteredResource, RegisteredTool, Registry, invalid_arguments
from mcphost.protocol import subscriptions, wire
from mcphost.protocol.tasks import (
    EXTENSION,
    TaskParams,
    Tasks,
    UpdateTaskParams,
    declares_tasks,
    missing_extension,
    shut_down_error,
)

if TYPE_CHECKING:
    from mcphost.protocol.tracing import Tracing

log = structlog.get_logger("mcphost.protocol")

Ctx = ServerRequestContext[Any, Any]

MAX_COMPLETIONS = 100
"""The most values one ``completion/complete`` answer may carry (the spec's limit)."""


def _request_meta() -> dict[str, Any]:
    """What a worker is told of the request it serves: its id and session, for its log lines."""
    record = current_request.get()
    return {} if record is None else {"id": record.request_id, "session": record.session_id}


def error_result(message: str, code: int | None = None, **data: Any) -> types.CallToolResult:
    """A failed tool call as the client sees it: ``isError`` and a message, nothing more; with
    ``code`` (``mcphost.core.errors``) also ``_meta["mcphost/error"] = {"code": code, **data}``."""
    meta = {ERROR_META_KEY: {"code": code, **data}} if code is not None else None
    return types.CallToolResult(content=[types.TextContent(type="text", text=message)], is_error=True, _meta=meta)


class Handlers:
    """MCP request handlers bound to a registry source."""

    def __init__(
        self,
        get_registry: Callable[[], Registry],
        drain: Drain,
        subs: subscriptions.Subscriptions,
        limits: RateLimits | None = None,
        metrics: Metrics | None = None,
        tracing: Tracing | None = None,
        tasks: Tasks | None = None,
    ):
        self.get_registry = get_registry
        self.drain = drain
        self.subscriptions = subs
        self.limits = limits or RateLimits()
        self.metrics = metrics or Metrics("", versions=wire.SUPPORTED_VERSIONS)
        self.tracing = tracing
        self.tasks = tasks
        """Long calls as tasks, once the daemon runs them (``None``: every call answers on its request)."""

    async def list_tools(self, ctx: Ctx | None, params: types.PaginatedRequestParams | None) -> types.ListToolsResult:
        """``tools/list``: every tool served that the caller may use (pre-built with the registry)."""
        return visible(self.get_registry()).tools

    def input_schema(self, name: str) -> dict[str, Any] | None:
        """A tool's input schema by name, for the SDK's 2026-07-28 header checks."""
        schema = self.get_registry().input_schemas.get(name)
        return dict(schema) if schema is not None and may_use(name) else None

    async def call_tool(
        self, ctx: Ctx | None, params: types.CallToolRequestParams
    ) -> types.CallToolResult | types.InputRequiredResult | dict[str, Any]:
        """``tools/call``: validate, run the tool inside its plugin's fence, shape the result;
        to a request that accepts tasks, maybe answer with a task (:mod:`mcphost.protocol.tasks`).

        ``ctx`` is ``None`` for a direct answer (:mod:`mcphost.protocol.direct`), which only ever
        calls a tool that takes no ``ToolContext`` and may not run as a task."""
        tool = self.get_registry().tools.get(params.name)
        # A tool outside the caller's scopes is answered exactly like one that does not exist.
        if tool is None or not may_use(tool.name):
            self.metrics.tool_refused(params.name, None if tool is None else tool.plugin)
            raise MCPError(code=types.INVALID_PARAMS, message=f"Unknown tool: {params.name}")
        if self.tasks is not None and ctx is not None and ctx.protocol_version in MODERN_PROTOCOL_VERSIONS:
            support = self.tasks.support(tool)
            if support != "forbidden" and declares_tasks(ctx):
                return await self.tasks.call(tool, lambda run: self._call(tool, params, ctx, run))
            if support == "required":
                raise missing_extension(f"tool {tool.name!r}")
        return await self._call(tool, params, ctx, None)

    async def _call(
        self,
        tool: RegisteredTool,
        params: types.CallToolRequestParams,
        ctx: Ctx | None,
        task: client_input.TaskChannel | None,
    ) -> types.CallToolResult | types.InputRequiredResult | dict[str, Any]:
        record = current_request.get()
        if record is not None:
            record.tool, record.plugin = tool.name, tool.plugin
        series = self.metrics.tool(tool.name, tool.plugin)
        span = self.tracing.tool_span(tool) if self.tracing is not None else None
        start = time.perf_counter()
        status = "cancelled"  # unless the call returns: the client cancelled it or went away
        try:
            with self.drain.call() as scope:
                result, status = await self._run_tool(tool, params, ctx, task)
            if scope.cancelled_caught:
                if task is not None and task.detached:
                    raise shut_down_error()
                message = f"tool {tool.name!r} was cancelled: the server is shutting down"
                result, status = error_result(message), "cancelled"
            return result
        except MCPError:  # a protocol error the tool ran into, answered as such
            status = "error"
            raise
        finally:
            end = time.perf_counter()
            series.observe(status, end - start, end)
            if span is not None:
                span.end(status)
            if record is not None:  # the request's one log line carries the call
                record.status, record.tool_ms = status, round((end - start) * 1000, 2)

    async def _run_tool(
        self,
        tool: RegisteredTool,
        params: types.CallToolRequestParams,
        ctx: Ctx | None,
        task: client_input.TaskChannel | None,
    ) -> tuple[types.CallToolResult | types.InputRequiredResult | dict[str, Any], str]:
        if (refusal := await self.limits.check_tool(current_identity(), tool.plugin, tool.name)) is not None:
            self.metrics.rate_limit_hit(refusal.scope.partition(" ")[0])  # "tool" or "plugin"
            retry = round(refusal.decision.retry_after, 3)
            return error_result(refusal.message(), RATE_LIMITED, limit=refusal.scope, retry_after=retry), "rate_limited"
        exchange = context = None
        if tool.context_param:
            # Only a tool with a ToolContext can ask the client anything, so only its call
            # needs the request's context (a direct answer, mcphost.protocol.direct, has none).
            assert ctx is not None
            exchange = client_input.Exchange.for_request(ctx, params)
            exchange.task = task
            context = ToolContext(tool.plugin, tool.name, tool.settings, ctx, exchange)
        try:
            if tool.remote is not None:
                result: Any = await tool.remote.call_tool(tool, params.arguments or {}, _request_meta(), context)
                # Converted in the worker, inside the same fence; measured here as any result is.
                outcome = "too_large" if results.over(result, tool.limits.max_result_bytes) else "ok"
            else:
                assert tool.sdk_tool is not None
                fn_meta = tool.sdk_tool.fn_metadata
                try:
                    kwargs = fn_meta.validate_arguments(params.arguments or {})
                except ValidationError as error:
                    return error_result(invalid_arguments(tool.name, error)), "invalid_arguments"
                except BaseException as error:  # a validator of the plugin's own types raised
                    if fence.own_cancellation(error):
                        raise
                    return error_result(str(fence.failure(error, tool.plugin, f"tool {tool.name!r}"))), "error"
                if tool.context_param:
                    kwargs[tool.context_param] = context
                outcome, result = await results.call(tool, kwargs)
        except client_input.InputRequired:
            assert exchange is not None
            return exchange.result(), "input_required"
        except fence.FenceError as error:
            code = TOOL_TIMEOUT if isinstance(error, fence.CallTimeout) else None
            return error_result(str(error), code), error.status
        if outcome != "ok":
            message, status = results.refusal(tool, outcome, result)
            return error_result(message), status
        if isinstance(result, types.InputRequiredResult):
            if exchange is not None and exchange.modern and not (task is not None and task.detached):
                return result, "input_required"
            return error_result(f"tool {tool.name!r} needs input that this client cannot be asked for"), "error"
        if isinstance(result, dict):  # a worker's result, as the JSON object it wrote
            return result, "error" if result.get("isError") is True else "ok"
        if not isinstance(result, types.CallToolResult):
            return error_result(f"tool {tool.name!r} returned an unsupported result"), "error"
        return result, "error" if result.is_error else "ok"

    async def list_resources(self, ctx: Ctx, params: types.PaginatedRequestParams | None) -> types.ListResourcesResult:
        """``resources/list``: the static resources the caller may read."""
        return visible(self.get_registry()).resources

    async def list_resource_templates(
        self, ctx: Ctx, params: types.PaginatedRequestParams | None
    ) -> types.ListResourceTemplatesResult:
        """``resources/templates/list``: the URI templates the caller may read."""
        return visible(self.get_registry()).templates

    def _resource(self, uri: str) -> tuple[RegisteredResource, dict[str, Any]]:
        # One outside the caller's scopes is answered exactly like one that does not exist.
        found = self.get_registry().find_resource(uri, may_read)
        if found is None:
            raise MCPError(code=types.INVALID_PARAMS, message=f"Unknown resource: {uri}", data={"uri": uri})
        return found

    async def read_resource(self, ctx: Ctx, params: types.ReadResourceRequestParams) -> types.ReadResourceResult:
        """``resources/read``: a static resource, or the first template that matches the URI."""
        uri = str(params.uri)
        entry, arguments = self._resource(uri)
        if entry.remote is None:
            return await serving.read_resource(entry, uri, arguments)
        try:
            return await entry.remote.read_resource(entry, uri, _request_meta())
        except fence.FenceError as error:
            raise MCPError(code=types.INTERNAL_ERROR, message=str(error), data={"uri": uri}) from None

    async def subscribe(self, ctx: Ctx, params: types.SubscribeRequestParams) -> types.EmptyResult:
        """``resources/subscribe`` (2025-11-25): updates of ``uri`` go to this session's stream."""
        uri = str(params.uri)
        self._resource(uri)
        if not await self.subscriptions.subscribe(ctx, uri):
            limit = subscriptions.MAX_SUBSCRIPTIONS_PER_SESSION
            raise MCPError(code=types.INVALID_REQUEST, message=f"Too many subscriptions: at most {limit} per session")
        return types.EmptyResult()

    async def unsubscribe(self, ctx: Ctx, params: types.UnsubscribeRequestParams) -> types.EmptyResult:
        """``resources/unsubscribe`` (2025-11-25)."""
        await self.subscriptions.unsubscribe(ctx, str(params.uri))
        return types.EmptyResult()

    async def list_prompts(self, ctx: Ctx, params: types.PaginatedRequestParams | None) -> types.ListPromptsResult:
        """``prompts/list``: the prompts the caller may use."""
        return visible(self.get_registry()).prompts

    async def get_prompt(
        self, ctx: Ctx, params: types.GetPromptRequestParams
    ) -> types.GetPromptResult | types.InputRequiredResult:
        """``prompts/get``: render a prompt with the client's arguments."""
        prompt = self.get_registry().prompts.get(params.name)
        if prompt is None or not may_use(prompt.name):
            raise MCPError(code=types.INVALID_PARAMS, message=f"Unknown prompt: {params.name}")
        arguments = params.arguments or {}
        missing = [a.name for a in prompt.wire.arguments or () if a.required and a.name not in arguments]
        if missing:
            raise MCPError(code=types.INVALID_PARAMS, message=f"Missing required arguments: {', '.join(missing)}")
        exchange = client_input.Exchange.for_request(ctx, params)
        context = None
        if prompt.context_param:
            context = ToolContext(prompt.plugin, prompt.name, prompt.settings, ctx, exchange)
        try:
            if prompt.remote is None:
                rendered = await serving.get_prompt(prompt, arguments, context)
            else:
                rendered = await prompt.remote.get_prompt(prompt, arguments, _request_meta(), context)
        except client_input.InputRequired:
            return exchange.result()
        except fence.FenceError as error:
            raise MCPError(code=types.INTERNAL_ERROR, message=str(error)) from None
        if isinstance(rendered, types.InputRequiredResult) and not exchange.modern:
            raise MCPError(code=types.INTERNAL_ERROR, message=f"prompt {prompt.name!r} needs input from the client")
        return rendered

    async def complete(self, ctx: Ctx, params: types.CompleteRequestParams) -> types.CompleteResult:
        """``completion/complete``: suggestions for a prompt argument or a template placeholder."""
        entry, what, name = self.get_registry().completable(params.ref)
        if entry is None or not may_use(name):
            raise MCPError(code=types.INVALID_PARAMS, message=f"Unknown {what}")
        if entry.remote is None:
            given = params.context.arguments if params.context and params.context.arguments else {}
            values = await serving.suggest(entry, params.argument.name, params.argument.value, given, what)
        else:
            try:
                values = await entry.remote.complete(entry, params, _request_meta())
            except fence.FenceError as error:
                raise MCPError(code=types.INTERNAL_ERROR, message=str(error)) from None
        return types.CompleteResult(
            completion=types.Completion(
                values=values[:MAX_COMPLETIONS], total=len(values), has_more=len(values) > MAX_COMPLETIONS
            )
        )

    async def set_logging_level(self, ctx: Ctx, params: types.SetLevelRequestParams) -> types.EmptyResult:
        """``logging/setLevel`` (2025-11-25): the least severe level this session's tools log at."""
        connection_of(ctx).state[LOG_LEVEL_STATE_KEY] = params.level
        return types.EmptyResult()


async def record_request(ctx: Ctx, call_next: CallNext) -> HandlerResult:
    """Server middleware: note the JSON-RPC method and error code on the request's record;
    where no transport made a record (stdio), log the request line here."""
    if ctx.request_id is None:
        return await call_next(ctx)
    record = current_request.get()
    own = record is None
    if record is None:
        record = RequestRecord(request_id=str(ctx.request_id))
        token = current_request.set(record)
    record.method = ctx.method
    try:
        return await call_next(ctx)
    except MCPError as error:
        record.rpc_error = error.error.code
        raise
    except ValidationError:
        record.rpc_error = types.INVALID_PARAMS
        raise
    finally:
        if own:
            current_request.reset(token)
            log.info(
                "request",
                request_id=record.request_id,
                duration_ms=round((time.perf_counter() - record.start) * 1000, 2),
                **record.fields(),
            )


def caller_principal(ctx: Ctx) -> str | None:
    """Whom a ``requestState`` is bound to: the authenticated caller, if there is one."""
    identity = current_identity()
    return None if identity is None else identity.key


def build_server(
    get_registry: Callable[[], Registry],
    name: str,
    version: str,
    instructions: str | None,
    drain: Drain,
    limits: RateLimits | None = None,
    state_key: bytes | None = None,
    metrics: Metrics | None = None,
    tracing: Tracing | None = None,
    max_listen_streams: int = 1024,
    max_listen_streams_per_identity: int | None = None,
    tasks: Tasks | None = None,
) -> tuple[Server[Any], Handlers]:
    """The SDK server whose handlers answer from ``get_registry()``, and those handlers;
    calls run under ``drain``.

    It also becomes the server :func:`mcphost.notify_resource_updated` announces to.
    ``metrics`` counts requests and tool calls; ``tracing``, when on, adds to the SDK's spans.
    At most ``max_listen_streams`` ``subscriptions/listen`` streams are open at once, and at
    most ``max_listen_streams_per_identity`` of one authenticated caller. With ``tasks``,
    long calls may become tasks, and the tasks extension is served and advertised.
    """
    subs = subscriptions.Subscriptions(get_registry, max_listen_streams, max_listen_streams_per_identity)
    notify.install(subs.updated)
    metrics = metrics or Metrics(version, versions=wire.SUPPORTED_VERSIONS)
    handlers = Handlers(get_registry, drain, subs, limits, metrics, tracing, tasks)
    server: Server[Any] = Server(
        name,
        version=version,
        instructions=instructions,
        get_tool_input_schema=handlers.input_schema,
        on_list_tools=handlers.list_tools,
        # A task is answered as a plain mapping (resultType "task"), which the SDK's runner passes
        # through on 2026-07-28 but its handler type does not name.
        on_call_tool=cast(Any, handlers.call_tool),
        on_list_resources=handlers.list_resources,
        on_list_resource_templates=handlers.list_resource_templates,
        on_read_resource=handlers.read_resource,
        on_subscribe_resource=handlers.subscribe,
        on_unsubscribe_resource=handlers.unsubscribe,
        on_subscriptions_listen=subs.listen,
        on_list_prompts=handlers.list_prompts,
        on_get_prompt=handlers.get_prompt,
        on_completion=handlers.complete,
        on_set_logging_level=handlers.set_logging_level,
    )
    if tasks is not None:
        # Advertised on 2026-07-28 only: the SDK's 2025-11-25 capabilities have no extensions.
        server.extensions[EXTENSION] = {}
        server.add_request_handler("tasks/get", TaskParams, tasks.get)
        server.add_request_handler("tasks/update", UpdateTaskParams, tasks.update)
        server.add_request_handler("tasks/cancel", TaskParams, tasks.cancel)
    if tracing is not None:
        # Right inside the SDK's own span middleware (the first), so it annotates that span.
        server.middleware.append(tracing.annotate)
    server.middleware.append(record_request)
    server.middleware.append(RequestMetrics(metrics))
    # Seals the requestState of every InputRequiredResult and rejects one that comes back
    # altered, late, or from another caller: answers carried between rounds are what this
    # process (or a replica sharing ``state_key``) handed out, to this caller.
    security = RequestStateSecurity(keys=[state_key or os.urandom(32)], bind_principal=caller_principal)
    server.middleware.append(RequestStateBoundary(security, default_audience=name))
    return server, handlers
