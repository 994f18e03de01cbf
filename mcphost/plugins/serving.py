"""Running a plugin's resources, prompts and completions inside its fence, and shaping what
they return into MCP results: the same code in the daemon (inline plugins) and in a
plugin's worker process (a tool's call is :func:`mcphost.plugins.results.call`).

Failures come out as :class:`~mcp.shared.exceptions.MCPError` (what a client of
``resources/read``, ``prompts/get`` and ``completion/complete`` gets), or
``InputRequired`` when a prompt asks the client in a later round. Finding the entry, and
whether the caller may use it, is the caller's business.
"""

from __future__ import annotations

import base64
import functools
from collections.abc import Mapping, Sequence
from typing import Any

import mcp_types as types
import pydantic_core
from mcp.shared.exceptions import MCPError

from mcphost.plugins import fence, results
from mcphost.plugins.context import ToolContext
from mcphost.plugins.definitions import Completer
from mcphost.plugins.registry import RegisteredPrompt, RegisteredResource


def _resource_content(uri: str, mime: str | None, value: Any, limit: int) -> Any:
    """A resource function's value as what ``resources/read`` sends (bytes as a blob, text as
    it is, anything else as JSON), or ``None`` when that is over ``limit`` bytes."""
    if isinstance(value, bytes):
        blob = base64.b64encode(value).decode()
        return types.BlobResourceContents(uri=uri, blob=blob, mime_type=mime) if len(blob) <= limit else None
    text = value if isinstance(value, str) else pydantic_core.to_json(value, fallback=str, indent=2).decode()
    return types.TextResourceContents(uri=uri, text=text, mime_type=mime) if len(text) <= limit else None


async def read_resource(entry: RegisteredResource, uri: str, arguments: Mapping[str, Any]) -> types.ReadResourceResult:
    """Read the resource at ``uri`` (``arguments``: the values its template extracted)."""
    what, limit = f"resource {uri!r}", entry.limits.max_result_bytes
    try:
        value = await fence.run(entry.definition.fn, dict(arguments), entry.limits, plugin=entry.plugin, what=what)
        size = results.measure(value, limit, results.LOOP_NODES)
        content = functools.partial(_resource_content, uri, entry.wire.mime_type, value, limit)
        # Anything but built-ins may run plugin code as it is rendered (``str`` of an object).
        if size.over(limit):
            contents = None
        elif size.plain:
            contents = content()
        else:
            contents = await fence.run(content, {}, entry.limits, plugin=entry.plugin, what=what)
    except fence.FenceError as error:
        raise MCPError(code=types.INTERNAL_ERROR, message=str(error), data={"uri": uri}) from None
    if contents is None:
        message = f"{what} is over its limit of {limit} bytes"
        raise MCPError(code=types.INTERNAL_ERROR, message=message, data={"uri": uri})
    return types.ReadResourceResult(contents=[contents])


async def get_prompt(
    prompt: RegisteredPrompt, arguments: Mapping[str, Any], context: ToolContext | None
) -> types.GetPromptResult | types.InputRequiredResult:
    """Render ``prompt`` with the client's ``arguments``: its messages, or the
    ``InputRequiredResult`` it returned itself (which the caller may pass on or refuse)."""
    assert prompt.sdk_prompt is not None
    try:
        rendered = await fence.run(
            prompt.sdk_prompt.render,
            {"arguments": dict(arguments), "context": context},
            prompt.limits,
            plugin=prompt.plugin,
            what=f"prompt {prompt.name!r}",
        )
    except fence.FenceError as error:
        raise MCPError(code=types.INTERNAL_ERROR, message=str(error)) from None
    if isinstance(rendered, types.InputRequiredResult):
        return rendered
    return types.GetPromptResult(
        description=prompt.wire.description,
        messages=[types.PromptMessage.model_validate(m.model_dump(by_alias=True)) for m in rendered],
    )


async def suggest(
    entry: RegisteredPrompt | RegisteredResource, argument: str, value: str, given: Mapping[str, str], what: str
) -> list[str]:
    """Every completion of ``argument`` (of a prompt or resource template) starting from
    ``value``, the other arguments being ``given``."""
    completer: Completer | None = entry.definition.complete.get(argument)
    if completer is None:
        return []
    if isinstance(completer, Sequence):
        return [v for v in completer if v.startswith(value)]
    try:
        values = await fence.run(
            functools.partial(completer, value, dict(given)), {}, entry.limits, plugin=entry.plugin, what=what
        )
    except fence.FenceError as error:
        raise MCPError(code=types.INTERNAL_ERROR, message=str(error)) from None
    if not isinstance(values, Sequence) or isinstance(values, str) or not all(isinstance(v, str) for v in values):
        raise MCPError(code=types.INTERNAL_ERROR, message=f"the completions of {what} are not a list of strings")
    return list(values)
