"""What a plugin hands the host: tool, resource and prompt definitions, and the decorators
that attach them to plain functions.

A decorated function stays an ordinary function (a plugin's own tests call it directly);
the definition rides on it as an attribute. This module knows nothing of MCP's wire format.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, TypeAlias, TypeVar, overload

F = TypeVar("F", bound=Callable[..., Any])

TaskSupport: TypeAlias = Literal["optional", "required", "forbidden"]
"""Whether a tool's call may (``optional``), must (``required``) or may not (``forbidden``)
run as a task, polled by the client instead of answered on its request."""

Completer: TypeAlias = Sequence[str] | Callable[[str, Mapping[str, str]], Sequence[str] | Awaitable[Sequence[str]]]
"""Suggestions for one argument of a prompt or resource template (``completion/complete``):
either the fixed values (the host offers those that start with what the user typed), or a
function, sync or async, of the partial value and the other arguments already given,
returning the suggestions."""

_ATTR = "__mcphost_definition__"


@dataclass(frozen=True, slots=True)
class ToolDef:
    """A tool as its plugin declares it; limits here are defaults the config may override."""

    fn: Callable[..., Any]
    name: str | None = None
    title: str | None = None
    description: str | None = None
    annotations: dict[str, Any] | None = None
    structured_output: bool | None = None
    input_schema: dict[str, Any] | None = None
    """A JSON Schema to publish instead of the one derived from the type hints (which still
    validate the arguments)."""
    timeout: float | None = None
    max_concurrency: int | None = None
    max_result_bytes: int | None = None
    task: TaskSupport | None = None
    """Whether calls may run as tasks; ``None``: optional for a tool whose timeout is long
    (``[tasks] min_timeout``), forbidden otherwise."""


@dataclass(frozen=True, slots=True)
class ResourceDef:
    """A resource (or, when ``uri`` has ``{placeholders}``, a resource template)."""

    fn: Callable[..., Any]
    uri: str
    name: str | None = None
    title: str | None = None
    description: str | None = None
    mime_type: str | None = None
    complete: Mapping[str, Completer] = field(default_factory=dict)
    """Completions of the template's ``{placeholders}``, by name."""


@dataclass(frozen=True, slots=True)
class PromptDef:
    """A prompt; its function's parameters are the prompt's arguments."""

    fn: Callable[..., Any]
    name: str | None = None
    title: str | None = None
    description: str | None = None
    meta: dict[str, Any] = field(default_factory=dict)
    complete: Mapping[str, Completer] = field(default_factory=dict)
    """Completions of the prompt's arguments, by name."""


@overload
def tool(fn: F, /) -> F: ...
@overload
def tool(
    *,
    name: str | None = None,
    title: str | None = None,
    description: str | None = None,
    annotations: dict[str, Any] | None = None,
    structured_output: bool | None = None,
    input_schema: dict[str, Any] | None = None,
    timeout: float | None = None,
    max_concurrency: int | None = None,
    max_result_bytes: int | None = None,
    task: TaskSupport | None = None,
) -> Callable[[F], F]: ...
def tool(fn: Callable[..., Any] | None = None, /, **options: Any) -> Any:
    """Declare a function as a tool, with a name, annotations or default limits.

    Usable bare (``@mcphost.tool``) or with options (``@mcphost.tool(timeout=60)``).
    The tool's public name is ``<prefix>_<name>``; the prefix is set by the config.
    """

    def attach(f: F) -> F:
        setattr(f, _ATTR, ToolDef(fn=f, **options))
        return f

    return attach(fn) if fn is not None else attach


def resource(
    uri: str,
    *,
    name: str | None = None,
    title: str | None = None,
    description: str | None = None,
    mime_type: str | None = None,
    complete: Mapping[str, Completer] | None = None,
) -> Callable[[F], F]:
    """Declare a function as the reader of resource ``uri`` (a template if it has ``{params}``,
    whose values are passed as the function's arguments, and ``complete`` may suggest)."""

    def attach(f: F) -> F:
        setattr(f, _ATTR, ResourceDef(f, uri, name, title, description, mime_type, dict(complete or {})))
        return f

    return attach


def prompt(
    fn: Callable[..., Any] | None = None,
    /,
    *,
    name: str | None = None,
    title: str | None = None,
    description: str | None = None,
    complete: Mapping[str, Completer] | None = None,
) -> Any:
    """Declare a function as a prompt, usable bare or with a name, a description and
    ``complete``, suggestions for its arguments by name."""

    def attach(f: F) -> F:
        setattr(f, _ATTR, PromptDef(f, name, title, description, complete=dict(complete or {})))
        return f

    return attach(fn) if fn is not None else attach


def definition_of(obj: Any, kind: type[Any]) -> Any:
    """The definition a plugin handed over, normalised: a definition as is, a decorated
    function's attached definition, or a bare function wrapped in ``kind``.

    Raises TypeError naming what was wrong, so the load error is attributable.
    """
    if isinstance(obj, kind):
        return obj
    attached = getattr(obj, _ATTR, None)
    if attached is not None:
        if not isinstance(attached, kind):
            raise TypeError(f"{_describe(obj)} is declared as a {type(attached).__name__}, not a {kind.__name__}")
        return attached
    if kind is ResourceDef:
        raise TypeError(f"{_describe(obj)} is not a resource: decorate it with @mcphost.resource(uri)")
    if callable(obj):
        return kind(fn=obj)
    raise TypeError(f"{_describe(obj)} is not a function")


def _describe(obj: Any) -> str:
    name = getattr(obj, "__qualname__", None)
    return repr(name) if name else f"a {type(obj).__name__} value"
