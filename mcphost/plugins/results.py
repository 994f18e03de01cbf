"""How big a plugin's result is, found without serializing it and given up on as soon as it
is too big.

A result a plugin returns is the plugin's own memory; serializing it makes copies, and a
huge one takes seconds. :func:`measure` walks the value and counts a lower bound of its
serialized size, stopping as soon as that is over the limit, so an oversized result is
refused without a single copy. It also says whether the value is *plain* (only built-in
JSON types, none subclassed, and small enough to have been walked whole): converting a
plain value runs no plugin code and takes little time, so it may happen on the event loop;
anything else is converted in a thread, inside the fence. :func:`shaping` makes converting
and measuring a tool's value a step of the tool's own fenced run.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import mcp_types as types
import orjson
import structlog
import trio

from mcphost.plugins import fence

if TYPE_CHECKING:
    from mcphost.plugins.registry import RegisteredTool

log = structlog.get_logger("mcphost.plugins")

LOOP_NODES = 10_000
"""The most values :func:`measure` walks on the event loop before it hands the rest over."""

_SCALARS = frozenset({int, float, bool, type(None)})


@dataclass(frozen=True, slots=True)
class Size:
    """What :func:`measure` found."""

    at_least: int
    """A lower bound of the serialized size in bytes (past the limit: where it stopped)."""
    plain: bool
    """Walked whole, and made only of ``dict``, ``list``, ``tuple``, ``str``, ``bytes``,
    ``int``, ``float``, ``bool`` and ``None``."""

    def over(self, limit: int) -> bool:
        """Whether the value is certainly bigger than ``limit`` once serialized."""
        return self.at_least > limit


def measure(value: Any, limit: int, max_nodes: int | None = None) -> Size:
    """Count ``value``'s serialized size from below, stopping once over ``limit`` or past
    ``max_nodes`` values (then it is not plain)."""
    total, nodes, plain = 0, 0, True
    stack = [value]
    while stack:
        item = stack.pop()
        nodes += 1
        if max_nodes is not None and nodes > max_nodes:
            return Size(total, False)
        kind = type(item)
        if kind is str or kind is bytes:
            total += len(item) + 2
        elif kind in _SCALARS:
            total += 1
        elif kind is dict:
            total += 2 + max(0, 2 * len(item) - 1)  # a colon per entry, a comma between
            for key, child in item.items():
                stack.append(key)
                stack.append(child)
        elif kind is list or kind is tuple:
            total += 2 + max(0, len(item) - 1)
            stack.extend(item)
        else:
            # A model, a dataclass, a subclass of a built-in: its conversion may run plugin
            # code, so it is converted (and then measured) in a thread.
            plain = False
            total += 1
        if total > limit:
            return Size(total, plain)
    return Size(total, plain)


Shaped = tuple[str, Any]
"""What :func:`convert` made of a tool's value: ``("ok", result)``, ``("too_large", None)``,
or ``("mismatch", exception)``."""


def convert(convert_result: Callable[[Any], Any], value: Any, *, limit: int, whole: bool = True) -> Shaped:
    """A tool's value as a result, measured (inside the tool's fence: see :func:`shaping`).

    An oversized value is refused before it is converted (so no copy of it is made), and a
    converted result is measured once more, whole, against ``limit``, unless ``whole`` is
    false: in a worker, whose daemon measures every result it gets (:func:`over`), since the
    worker is not trusted to."""
    if measure(value, limit).over(limit):
        return "too_large", None
    try:
        result = convert_result(value)
    except Exception as error:
        return "mismatch", error
    if whole and over(result, limit):
        return "too_large", None
    return "ok", result


def refusal(tool: RegisteredTool, outcome: str, error: Any) -> tuple[str, str]:
    """What the client is told of a value :func:`convert` refused, and the call's status (a
    mismatch is logged here)."""
    if outcome == "too_large":
        limit = tool.limits.max_result_bytes
        return f"tool {tool.name!r} returned a result over its limit of {limit} bytes", "too_large"
    log.error("tool returned a bad result", tool=tool.name, plugin=tool.plugin, exc_info=error)
    return f"tool {tool.name!r} returned a result that does not match its declared output", "error"


def over(result: Any, limit: int) -> bool:
    """Whether ``result`` (a ``CallToolResult``, or one as the JSON object a worker wrote) is
    over ``limit`` bytes as the client would get it."""
    if isinstance(result, types.CallToolResult):
        return len(result.model_dump_json(by_alias=True, exclude_none=True)) > limit
    if isinstance(result, dict):
        try:
            return len(orjson.dumps(result)) > limit
        except TypeError:  # an integer past 64 bits, which only the standard library writes
            # Counted unescaped, as the client gets it (the same fallback on the wire to a worker
            # escapes what is not ASCII instead: a frame must carry a lone surrogate too).
            return len(json.dumps(result, separators=(",", ":"), ensure_ascii=False)) > limit
    return False


def shaping(convert_result: Callable[[Any], Any], limit: int, whole: bool = True) -> fence.Then:
    """Converting and measuring a tool's value (see :func:`convert`) as a step of its fenced
    run, so a validator of the plugin's return type is contained and watched like the tool:
    in the call's thread after a sync tool; after an async one on the event loop when the
    value is small and made of built-ins, else in a thread."""

    def quick(value: Any) -> bool:
        size = measure(value, limit, LOOP_NODES)
        return size.plain or size.over(limit)

    return fence.Then(functools.partial(convert, convert_result, limit=limit, whole=whole), quick)


async def call(
    tool: RegisteredTool,
    kwargs: dict[str, Any],
    budget: float | None = None,
    scope: trio.CancelScope | None = None,
    whole: bool = True,
) -> Shaped:
    """Run a plugin's ``tool`` with validated ``kwargs``, and shape its value (see
    :func:`convert`), in one fenced run (within ``budget``, the rest of its timeout, when it
    waited elsewhere for its slot; in the caller's ``scope``, if given); raises what
    :func:`mcphost.plugins.fence.run` raises."""
    assert tool.sdk_tool is not None
    limit = tool.limits.max_result_bytes
    then = shaping(tool.sdk_tool.fn_metadata.convert_result, limit, whole)
    what = f"tool {tool.name!r}"
    return await fence.run(
        tool.fn, kwargs, tool.limits, plugin=tool.plugin, what=what, then=then, budget=budget, scope=scope
    )
