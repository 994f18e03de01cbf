"""How big a plugin's result is, found without serializing it and given up on as soon as it
is too big.

A result a plugin returns is the plugin's own memory; serializing it makes copies, and a
huge one takes seconds. :func:`measure` walks the value and counts a lower bound of its
serialized size, stopping as soon as that is over the limit, so an oversized result is
refused without a single copy. It also says whether the value is *plain* (only built-in
JSON types, none subclassed, and small enough to have been walked whole): converting a
plain value runs no plugin code and takes little time, so it may happen on the event loop;
anything else is converted in a thread, inside the fence.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

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
