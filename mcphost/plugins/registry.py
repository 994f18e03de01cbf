"""The registry: an immutable snapshot of every loaded plugin's tools, resources and prompts.

A snapshot is built once per (re)load and swapped in whole, so a request sees one
consistent catalogue from start to end, and listing is a lookup of pre-built wire objects.
This module turns plugin definitions into catalogue entries; it does not run them.
"""

from __future__ import annotations

import functools
import inspect
import json
import re
import typing
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

import mcp_types as types
from mcp.shared.inbound import X_MCP_HEADER_KEY
from pydantic import ValidationError

from mcphost.plugins.context import ToolContext
from mcphost.plugins.definitions import PromptDef, ResourceDef, TaskSupport, ToolDef
from mcphost.plugins.limits import ToolLimits

if TYPE_CHECKING:
    # Imported where a plugin's own definitions are built (build_tool, build_prompt,
    # build_resource): that happens in the process that runs the plugin, so a daemon whose
    # plugins all run in workers never imports them (the fork server imports them for its
    # workers).
    from mcp.server.mcpserver.prompts.base import Prompt
    from mcp.server.mcpserver.tools.base import Tool
    from mcp.shared.uri_template import UriTemplate

NAME_PATTERN = re.compile(r"^[A-Za-z0-9_-]+$")


class Remote(Protocol):
    """Where the tools, resources, prompts and completions of a plugin that runs in a worker
    process are run. Each raises :class:`~mcphost.plugins.fence.FenceError` when the worker
    produced no answer (it died, or overran the timeout), ``InputRequired`` when the plugin
    asks the client in a later round, and (all but ``call_tool``) the ``MCPError`` the plugin's
    code came to in the worker, as an inline call would."""

    async def call_tool(
        self, tool: RegisteredTool, arguments: dict[str, Any], meta: dict[str, Any], context: ToolContext | None
    ) -> types.CallToolResult | types.InputRequiredResult | dict[str, Any]:
        """Run ``tool`` in the worker: its result (as the model, or as the JSON object the
        worker wrote, which the client's answer validates), or the ``InputRequiredResult`` it returned."""
        ...

    async def read_resource(
        self, entry: RegisteredResource, uri: str, meta: dict[str, Any]
    ) -> types.ReadResourceResult:
        """Read the resource at ``uri`` (static, or of the template ``entry``) in the worker."""
        ...

    async def get_prompt(
        self, prompt: RegisteredPrompt, arguments: dict[str, Any], meta: dict[str, Any], context: ToolContext | None
    ) -> types.GetPromptResult | types.InputRequiredResult:
        """Render ``prompt`` in the worker."""
        ...

    async def complete(
        self, entry: RegisteredPrompt | RegisteredResource, params: types.CompleteRequestParams, meta: dict[str, Any]
    ) -> list[str]:
        """Every completion the worker suggests for ``params`` (of ``entry``)."""
        ...

    async def subscribe(self, uri: str) -> None:
        """A first client subscribed to the resource at ``uri`` (never raises)."""
        ...

    async def unsubscribe(self, uri: str) -> None:
        """The last client subscribed to the resource at ``uri`` left (never raises)."""
        ...


def remote_only(*args: Any, **kwargs: Any) -> Any:
    """The function of a resource or prompt whose plugin runs in a worker: it runs there."""
    raise RuntimeError("this runs in the plugin's worker process")


@dataclass(frozen=True, slots=True)
class RegisteredTool:
    """One tool as served: its public name, its plugin, its schema and its limits."""

    name: str
    plugin: str
    sdk_tool: Tool | None
    """The SDK's view of the function: argument model, output schema, result conversion
    (``None`` for a tool served by a worker process, which has it there)."""
    wire: types.Tool
    limits: ToolLimits
    settings: Any
    context_param: str | None
    task: TaskSupport | None = None
    """The author's word on running calls as tasks (``None``: decided by the timeout)."""
    remote: Remote | None = None
    """The worker process that runs the tool, or ``None`` for a tool run in this process."""

    @property
    def fn(self) -> Callable[..., Any]:
        """The plugin's function."""
        assert self.sdk_tool is not None, "a worker's tool has no function in this process"
        return self.sdk_tool.fn


@dataclass(frozen=True, slots=True)
class RegisteredResource:
    """A static resource or a resource template, with the plugin that reads it."""

    plugin: str
    definition: ResourceDef
    template: UriTemplate | None
    wire: types.Resource | types.ResourceTemplate
    limits: ToolLimits
    remote: Remote | None = None
    """The worker process that reads it, or ``None`` (this process, ``definition.fn``)."""


@dataclass(frozen=True, slots=True)
class RegisteredPrompt:
    """A prompt, its argument model and its plugin."""

    name: str
    plugin: str
    sdk_prompt: Prompt | None
    """The SDK's view of the function (``None`` for a prompt rendered by a worker process)."""
    wire: types.Prompt
    limits: ToolLimits
    settings: Any
    definition: PromptDef
    context_param: str | None
    """The parameter that receives the ``ToolContext``, if the prompt asks for one."""
    remote: Remote | None = None
    """The worker process that renders it, or ``None`` for a prompt rendered in this process."""


@dataclass(frozen=True, slots=True)
class Listing:
    """The four listing results of a catalogue, pre-built (whole, or as one scope sees it)."""

    tools: types.ListToolsResult
    prompts: types.ListPromptsResult
    resources: types.ListResourcesResult
    templates: types.ListResourceTemplatesResult

    def filtered(self, allows: Callable[[str], bool]) -> Listing:
        """The entries whose name (tools, prompts) or URI (resources, templates) ``allows`` accepts."""
        return Listing(
            types.ListToolsResult(tools=[t for t in self.tools.tools if allows(t.name)]),
            types.ListPromptsResult(prompts=[p for p in self.prompts.prompts if allows(p.name)]),
            types.ListResourcesResult(resources=[r for r in self.resources.resources if allows(str(r.uri))]),
            types.ListResourceTemplatesResult(
                resource_templates=[t for t in self.templates.resource_templates if allows(t.uri_template)]
            ),
        )


@dataclass(frozen=True)
class Registry:
    """Everything served, by public name (tools, prompts) or URI (resources)."""

    tools: Mapping[str, RegisteredTool] = field(default_factory=dict)
    resources: Mapping[str, RegisteredResource] = field(default_factory=dict)
    templates: tuple[RegisteredResource, ...] = ()
    prompts: Mapping[str, RegisteredPrompt] = field(default_factory=dict)

    # The derived views below are built on first use, then kept, so tools/list and friends
    # are a lookup, not a walk. Not at construction: loading builds a registry per plugin
    # merged, and only the one served is ever asked.

    @functools.cached_property
    def listing(self) -> Listing:
        """The ``tools/list``, ``prompts/list``, ``resources/list`` and
        ``resources/templates/list`` results: everything, in registration order."""
        return Listing(
            types.ListToolsResult(tools=[t.wire for t in self.tools.values()]),
            types.ListPromptsResult(prompts=[p.wire for p in self.prompts.values()]),
            types.ListResourcesResult(resources=[r.wire for r in self.resources.values()]),
            types.ListResourceTemplatesResult(resource_templates=[t.wire for t in self.templates]),
        )

    @functools.cached_property
    def input_schemas(self) -> Mapping[str, Mapping[str, Any]]:
        """Each tool's input schema, by public name."""
        return {n: t.wire.input_schema for n, t in self.tools.items()}

    @functools.cached_property
    def header_params(self) -> frozenset[str]:
        """Tools whose input schema may declare ``x-mcp-header`` parameters (2026-07-28
        ``Mcp-Param`` headers); a call of any other tool has no such header to check."""
        return frozenset(n for n, schema in self.input_schemas.items() if X_MCP_HEADER_KEY in json.dumps(schema))

    def template(self, uri_template: str) -> RegisteredResource | None:
        """The template registered under exactly ``uri_template``."""
        return next((t for t in self.templates if t.definition.uri == uri_template), None)

    def completable(
        self, ref: types.PromptReference | types.ResourceTemplateReference
    ) -> tuple[RegisteredPrompt | RegisteredResource | None, str, str]:
        """What ``completion/complete`` completes for ``ref``: the prompt or template (``None``
        when there is none), how messages name it, and the name scopes know it by."""
        if isinstance(ref, types.PromptReference):
            return self.prompts.get(ref.name), f"prompt {ref.name!r}", ref.name
        return self.template(ref.uri), f"resource template {ref.uri!r}", ref.uri

    def find_resource(
        self, uri: str, readable: Callable[[str, str | None], bool] = lambda uri, template: True
    ) -> tuple[RegisteredResource, dict[str, Any]] | None:
        """The resource at ``uri`` and the values its template extracts: the static resource,
        else the first template that matches; only those ``readable(uri, template)`` accepts."""
        static = self.resources.get(uri)
        if static is not None and readable(uri, None):
            return static, {}
        for entry in self.templates:
            assert entry.template is not None
            params = entry.template.match(uri)
            if params is not None and readable(uri, entry.definition.uri):
                return entry, params
        return None

    def merged(self, other: Registry) -> Registry:
        """This registry plus ``other``'s entries (the caller has checked there are no clashes)."""
        return Registry(
            {**self.tools, **other.tools},
            {**self.resources, **other.resources},
            self.templates + other.templates,
            {**self.prompts, **other.prompts},
        )

    def clashes(self, other: Registry) -> list[str]:
        """Names and URIs ``other`` would take from this registry, each with the plugin serving it now."""
        found = [f"tool {n!r} (plugin {self.tools[n].plugin!r})" for n in other.tools if n in self.tools]
        found += [
            f"resource {u!r} (plugin {self.resources[u].plugin!r})" for u in other.resources if u in self.resources
        ]
        mine = {t.definition.uri: t.plugin for t in self.templates}
        found += [
            f"resource template {t.definition.uri!r} (plugin {mine[t.definition.uri]!r})"
            for t in other.templates
            if t.definition.uri in mine
        ]
        found += [f"prompt {n!r} (plugin {self.prompts[n].plugin!r})" for n in other.prompts if n in self.prompts]
        return found


def public_name(prefix: str, name: str, max_length: int) -> str:
    """``<prefix>_<name>`` (or ``name`` with an empty prefix), checked for the characters and
    length every client accepts; raises ValueError saying what is wrong."""
    full = f"{prefix}_{name}" if prefix else name
    if not NAME_PATTERN.match(full):
        raise ValueError(f"name {full!r} may only contain letters, digits, '_' and '-'")
    if len(full) > max_length:
        raise ValueError(f"name {full!r} is {len(full)} characters, longer than tools.max_name_length={max_length}")
    return full


def invalid_arguments(tool: str, error: ValidationError) -> str:
    """What a client is told about arguments that do not fit ``tool``'s schema: the model's
    mistake, reported so it can correct itself (SEP-1303), values left out."""
    problems = "; ".join(f"{'.'.join(map(str, e['loc'])) or 'arguments'}: {e['msg']}" for e in error.errors())
    return f"Invalid arguments for tool {tool!r}: {problems}"


def context_parameter(fn: Callable[..., Any]) -> str | None:
    """The name of ``fn``'s parameter annotated ``ToolContext`` (or ``ToolContext | None``)."""
    try:
        hints = typing.get_type_hints(fn)
    except Exception:
        hints = {}
    for name in inspect.signature(fn).parameters:
        hint = hints.get(name)
        if any(h is ToolContext or typing.get_origin(h) is ToolContext for h in (hint, *typing.get_args(hint))):
            return name
    return None


def build_tool(
    plugin: str, prefix: str, definition: ToolDef, limits: ToolLimits, settings: Any, max_length: int
) -> RegisteredTool:
    """A catalogue entry for one tool; raises on a bad name or a signature the schema cannot describe."""
    from mcp.server.mcpserver.tools.base import Tool  # see the imports above

    fn = definition.fn
    name = public_name(prefix, definition.name or fn.__name__, max_length)
    ctx_param = context_parameter(fn)
    sdk_tool = Tool.from_function(
        fn,
        name=name,
        title=definition.title,
        description=definition.description,
        context_kwarg=ctx_param,
        annotations=types.ToolAnnotations(**definition.annotations) if definition.annotations else None,
        structured_output=definition.structured_output,
    )
    wire = types.Tool(
        name=name,
        title=sdk_tool.title,
        description=inspect.cleandoc(sdk_tool.description) if sdk_tool.description else None,
        input_schema=definition.input_schema or sdk_tool.parameters,
        output_schema=sdk_tool.output_schema,
        annotations=sdk_tool.annotations,
    )
    return RegisteredTool(name, plugin, sdk_tool, wire, limits, settings, ctx_param, definition.task)


def build_resource(plugin: str, definition: ResourceDef, limits: ToolLimits) -> RegisteredResource:
    """A catalogue entry for a resource or, when its URI has ``{placeholders}``, a template."""
    fn = definition.fn
    name = definition.name or fn.__name__
    description = definition.description or inspect.getdoc(fn)
    mime = definition.mime_type or "text/plain"
    if "{" in definition.uri:
        from mcp.shared.uri_template import UriTemplate  # see the imports above

        template = UriTemplate.parse(definition.uri)
        _check_completions(definition.complete, template.variable_names, "placeholder")
        wire: types.Resource | types.ResourceTemplate = types.ResourceTemplate(
            uri_template=definition.uri, name=name, title=definition.title, description=description, mime_type=mime
        )
        return RegisteredResource(plugin, definition, template, wire, limits)
    _check_completions(definition.complete, (), "placeholder")
    wire = types.Resource(
        uri=definition.uri, name=name, title=definition.title, description=description, mime_type=mime
    )
    return RegisteredResource(plugin, definition, None, wire, limits)


def build_prompt(
    plugin: str, prefix: str, definition: PromptDef, limits: ToolLimits, max_length: int, settings: Any = None
) -> RegisteredPrompt:
    """A catalogue entry for one prompt, named like tools are; ``settings`` reach its ``ToolContext``."""
    from mcp.server.mcpserver.prompts.base import Prompt  # see the imports above

    name = public_name(prefix, definition.name or definition.fn.__name__, max_length)
    sdk_prompt = Prompt.from_function(
        definition.fn,
        name=name,
        title=definition.title,
        description=definition.description,
        context_kwarg=context_parameter(definition.fn),
    )
    _check_completions(definition.complete, [a.name for a in sdk_prompt.arguments or ()], "argument")
    wire = types.Prompt(
        name=name,
        title=sdk_prompt.title,
        description=sdk_prompt.description,
        arguments=[
            types.PromptArgument(name=a.name, description=a.description, required=a.required)
            for a in sdk_prompt.arguments or ()
        ],
    )
    return RegisteredPrompt(name, plugin, sdk_prompt, wire, limits, settings, definition, sdk_prompt.context_kwarg)


def _check_completions(complete: Mapping[str, Any], names: Iterable[str], kind: str) -> None:
    """Refuse completions for names that are not there (a typo would otherwise never complete)."""
    unknown = sorted(set(complete) - set(names))
    if unknown:
        raise ValueError(f"complete= names no {kind} called {', '.join(map(repr, unknown))}")


def combine(parts: Iterable[Registry]) -> Registry:
    """One registry from several that are known not to clash."""
    result = Registry()
    for part in parts:
        result = result.merged(part)
    return result
