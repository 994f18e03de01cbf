"""The MCP handlers: the SDK's low-level server answering from the current registry.

Each handler reads the registry once (``get_registry()``), so a reload that swaps it
mid-request is never seen half-way. Tool, resource and prompt functions run through
:mod:`mcphost.fence`; this module turns their values and failures into MCP results.
"""

from __future__ import annotations

import base64
import time
from collections.abc import Callable
from typing import Any

import mcp_types as types
import pydantic_core
import structlog
from mcp.server.context import CallNext, HandlerResult, ServerRequestContext
from mcp.server.lowlevel.server import Server
from mcp.shared.exceptions import MCPError
from pydantic import ValidationError

from mcphost import fence
from mcphost.context import ToolContext
from mcphost.log import RequestRecord, current_request
from mcphost.registry import RegisteredTool, Registry

log = structlog.get_logger("mcphost.protocol")

Ctx = ServerRequestContext[Any, Any]


def error_result(message: str) -> types.CallToolResult:
    """A failed tool call as the client sees it: ``isError`` and a message, nothing more."""
    return types.CallToolResult(content=[types.TextContent(type="text", text=message)], is_error=True)


class Handlers:
    """MCP request handlers bound to a registry source."""

    def __init__(self, get_registry: Callable[[], Registry]):
        self.get_registry = get_registry

    async def list_tools(self, ctx: Ctx, params: types.PaginatedRequestParams | None) -> types.ListToolsResult:
        """``tools/list``: every tool served (pre-built with the registry)."""
        return self.get_registry().tools_result

    def input_schema(self, name: str) -> dict[str, Any] | None:
        """A tool's input schema by name, for the SDK's 2026-07-28 header checks."""
        schema = self.get_registry().input_schemas.get(name)
        return dict(schema) if schema is not None else None

    async def call_tool(self, ctx: Ctx, params: types.CallToolRequestParams) -> types.CallToolResult:
        """``tools/call``: validate, run the tool inside its plugin's fence, shape the result."""
        tool = self.get_registry().tools.get(params.name)
        if tool is None:
            raise MCPError(code=types.INVALID_PARAMS, message=f"Unknown tool: {params.name}")
        record = current_request.get()
        if record is not None:
            record.tool, record.plugin = tool.name, tool.plugin
        start = time.perf_counter()
        result, status = await self._run_tool(tool, params.arguments or {}, ctx)
        if record is not None:
            record.status = status
        log.info(
            "tool call",
            tool=tool.name,
            plugin=tool.plugin,
            status=status,
            duration_ms=round((time.perf_counter() - start) * 1000, 2),
        )
        return result

    async def _run_tool(
        self, tool: RegisteredTool, arguments: dict[str, Any], ctx: Ctx
    ) -> tuple[types.CallToolResult, str]:
        meta = tool.sdk_tool.fn_metadata
        try:
            kwargs = meta.validate_arguments(arguments)
        except ValidationError as error:
            # The model's mistake, reported so it can correct itself (SEP-1303), values left out.
            problems = "; ".join(f"{'.'.join(map(str, e['loc'])) or 'arguments'}: {e['msg']}" for e in error.errors())
            return error_result(f"Invalid arguments for tool {tool.name!r}: {problems}"), "invalid_arguments"
        if tool.context_param:
            kwargs[tool.context_param] = ToolContext(tool.plugin, tool.name, tool.settings, ctx)
        try:
            value = await fence.run(tool.fn, kwargs, tool.limits, plugin=tool.plugin, what=f"tool {tool.name!r}")
        except fence.FenceError as error:
            return error_result(str(error)), error.status
        try:
            result = meta.convert_result(value)
        except Exception as error:
            log.error("tool returned a bad result", tool=tool.name, plugin=tool.plugin, exc_info=error)
            return error_result(
                f"tool {tool.name!r} returned a result that does not match its declared output"
            ), "error"
        if not isinstance(result, types.CallToolResult):
            return error_result(f"tool {tool.name!r} returned an unsupported result"), "error"
        size = len(result.model_dump_json(by_alias=True, exclude_none=True))
        if size > tool.limits.max_result_bytes:
            message = f"tool {tool.name!r} returned {size} bytes, over its limit of {tool.limits.max_result_bytes}"
            return error_result(message), "too_large"
        return result, "error" if result.is_error else "ok"

    async def list_resources(self, ctx: Ctx, params: types.PaginatedRequestParams | None) -> types.ListResourcesResult:
        """``resources/list``: the static resources."""
        return types.ListResourcesResult(resources=[r.wire for r in self.get_registry().resources.values()])  # type: ignore[misc]

    async def list_resource_templates(
        self, ctx: Ctx, params: types.PaginatedRequestParams | None
    ) -> types.ListResourceTemplatesResult:
        """``resources/templates/list``: the URI templates."""
        return types.ListResourceTemplatesResult(resource_templates=[t.wire for t in self.get_registry().templates])  # type: ignore[misc]

    async def read_resource(self, ctx: Ctx, params: types.ReadResourceRequestParams) -> types.ReadResourceResult:
        """``resources/read``: a static resource, or the first template that matches the URI."""
        uri = str(params.uri)
        registry = self.get_registry()
        entry, kwargs = registry.resources.get(uri), {}
        if entry is None and (found := registry.find_template(uri)) is not None:
            entry, kwargs = found
        if entry is None:
            raise MCPError(code=types.INVALID_PARAMS, message=f"Unknown resource: {uri}", data={"uri": uri})
        try:
            value = await fence.run(
                entry.definition.fn, kwargs, entry.limits, plugin=entry.plugin, what=f"resource {uri!r}"
            )
        except fence.FenceError as error:
            raise MCPError(code=types.INTERNAL_ERROR, message=str(error), data={"uri": uri}) from None
        mime = entry.wire.mime_type
        if isinstance(value, bytes):
            content: Any = types.BlobResourceContents(uri=uri, blob=base64.b64encode(value).decode(), mime_type=mime)
        else:
            text = value if isinstance(value, str) else pydantic_core.to_json(value, fallback=str, indent=2).decode()
            content = types.TextResourceContents(uri=uri, text=text, mime_type=mime)
        return types.ReadResourceResult(contents=[content])

    async def list_prompts(self, ctx: Ctx, params: types.PaginatedRequestParams | None) -> types.ListPromptsResult:
        """``prompts/list``."""
        return types.ListPromptsResult(prompts=[p.wire for p in self.get_registry().prompts.values()])

    async def get_prompt(self, ctx: Ctx, params: types.GetPromptRequestParams) -> types.GetPromptResult:
        """``prompts/get``: render a prompt with the client's arguments."""
        prompt = self.get_registry().prompts.get(params.name)
        if prompt is None:
            raise MCPError(code=types.INVALID_PARAMS, message=f"Unknown prompt: {params.name}")
        arguments = params.arguments or {}
        missing = [a.name for a in prompt.wire.arguments or () if a.required and a.name not in arguments]
        if missing:
            raise MCPError(code=types.INVALID_PARAMS, message=f"Missing required arguments: {', '.join(missing)}")
        render = prompt.sdk_prompt.render
        try:
            messages = await fence.run(
                render,
                {"arguments": arguments, "context": None},
                prompt.limits,
                plugin=prompt.plugin,
                what=f"prompt {prompt.name!r}",
            )
        except fence.FenceError as error:
            raise MCPError(code=types.INTERNAL_ERROR, message=str(error)) from None
        return types.GetPromptResult(
            description=prompt.wire.description,
            messages=[types.PromptMessage.model_validate(m.model_dump(by_alias=True)) for m in messages],
        )


async def record_request(ctx: Ctx, call_next: CallNext) -> HandlerResult:
    """Server middleware: note the JSON-RPC method and error code on the request's record;
    where no transport made a record (stdio), log the request line here."""
    if ctx.request_id is None:
        return await call_next(ctx)
    record = current_request.get()
    own = record is None
    if record is None:
        record = RequestRecord(request_id=str(ctx.request_id))
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
            log.info(
                "request",
                request_id=record.request_id,
                duration_ms=round((time.perf_counter() - record.start) * 1000, 2),
                **record.fields(),
            )


def build_server(
    get_registry: Callable[[], Registry], name: str, version: str, instructions: str | None
) -> Server[Any]:
    """The SDK server whose handlers answer from ``get_registry()``."""
    handlers = Handlers(get_registry)
    server: Server[Any] = Server(
        name,
        version=version,
        instructions=instructions,
        get_tool_input_schema=handlers.input_schema,
        on_list_tools=handlers.list_tools,
        on_call_tool=handlers.call_tool,
        on_list_resources=handlers.list_resources,
        on_list_resource_templates=handlers.list_resource_templates,
        on_read_resource=handlers.read_resource,
        on_list_prompts=handlers.list_prompts,
        on_get_prompt=handlers.get_prompt,
    )
    server.middleware.append(record_request)
    return server
